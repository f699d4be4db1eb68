"""Each snapshot version names one shape of its aggregate: changing an aggregate's fields
without a new number in SNAPSHOT_VERSIONS (app/service/repository.py) fails here, so old
snapshots are never loaded into the new fields."""

from __future__ import annotations

import dataclasses

from app.domain.model import Employee, Location
from app.service.repository import SNAPSHOT_VERSIONS

SHAPES: dict[tuple[type, int], list[tuple[str, str]]] = {
    (Location, 1): [("location_id", "int"), ("street_address", "str"), ("city", "str"),
                    ("state", "str"), ("postal_code", "str"), ("version", "int")],
    (Employee, 1): [("employee_id", "int"), ("job_title", "str"), ("location_id", "int | None"),
                    ("terminated", "bool"), ("version", "int"),
                    ("personal_data_erased", "bool")],
}
"""The fields of every snapshot version there has been: add a line with the new number when
an aggregate changes; never edit one."""


def test_every_aggregate_has_the_shape_its_snapshot_version_names() -> None:
    assert set(SNAPSHOT_VERSIONS) == {Location, Employee}
    for aggregate, version in SNAPSHOT_VERSIONS.items():
        fields = [(f.name, str(f.type)) for f in dataclasses.fields(aggregate)]
        assert fields == SHAPES[aggregate, version], (
            f"{aggregate.__name__}'s fields changed: give it a new snapshot version")
