import type { JSX } from 'preact';
import { CREATE_EMPLOYEE, LOCATION_PAGE, mutate, type LocationOption } from '../api';
import { FormCard, SelectField, TextField, optionalId, useForm } from '../fields';
import { age, formatDate, formatDateTime, personName, plural } from '../format';
import { href } from '../router';
import { Card, Empty, ErrorBanner, PageTitle, Skeleton } from '../ui';
import { useQuery } from '../useQuery';
import type { ViewProps } from './types';

const PAGE_SIZE = 200;

export function LocationView({ id, at, refresh, onWrite }: ViewProps & { id: number }): JSX.Element {
  const { data, error } = useQuery(LOCATION_PAGE, { id, at, first: PAGE_SIZE }, refresh);
  const location = data?.location;
  const crumbs = (
    <nav aria-label="Breadcrumb" class="breadcrumbs">
      <a href={href.locations}>Locations</a> <span aria-hidden="true">/</span> <span>#{id}</span>
    </nav>
  );

  if (!data) {
    return (
      <>
        <PageTitle eyebrow={crumbs}>Location #{id}</PageTitle>
        {error ? <ErrorBanner>Could not load location #{id}: {error}</ErrorBanner> : <Skeleton rows={4} />}
      </>
    );
  }
  if (!location) {
    return (
      <>
        <PageTitle eyebrow={crumbs}>Location #{id}</PageTitle>
        {error && <ErrorBanner>{error}</ErrorBanner>}
        <Empty id="location-missing" title={at === null ? `There is no location #${id}` : `Location #${id} did not exist yet at position ${at}`}>
          <a href={href.locations}>See all locations</a>
        </Empty>
      </>
    );
  }

  const employees = data.employees.edges.map((e) => e.node);
  return (
    <>
      <PageTitle eyebrow={crumbs}>{location.city}</PageTitle>
      <p class="lede" id="location-address">
        {location.streetAddress}, {location.city}, {location.state} {location.postalCode}
      </p>
      {error && <ErrorBanner>{error}</ErrorBanner>}
      <dl class="facts">
        <div>
          <dt>Employees</dt>
          <dd id="location-employee-count">{location.employeeCount}</dd>
        </div>
        <div>
          <dt>Version</dt>
          <dd>{location.version}</dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd>{formatDateTime(location.updatedAt)}</dd>
        </div>
      </dl>

      <Card title="Staff" id="staff">
        {employees.length === 0 ? (
          <Empty id="employees-empty" title="No employees at this location">
            {at === null ? 'Hire someone with the form below.' : null}
          </Empty>
        ) : (
          <div class="table-wrap">
            <table id="employee-table">
              <caption class="visually-hidden">Employees of {location.city}</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Job title</th>
                  <th scope="col" class="hide-narrow">Born</th>
                  <th scope="col" class="num">Id</th>
                </tr>
              </thead>
              <tbody>
                {employees.map((e) => (
                  <tr key={e.id} data-employee-id={e.id}>
                    <td>
                      <a href={href.employee(e.id)}>{personName(e)}</a>
                    </td>
                    <td>{e.jobTitle}</td>
                    <td class="hide-narrow">
                      {e.dateOfBirth == null ? (
                        <span class="muted">erased</span>
                      ) : (
                        <>
                          {formatDate(e.dateOfBirth)} <span class="muted">({age(e.dateOfBirth)})</span>
                        </>
                      )}
                    </td>
                    <td class="num muted">#{e.id}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {data.employees.pageInfo.hasNextPage && (
          <p class="muted">
            Showing the first {employees.length} of {plural(data.employees.totalCount, 'employee')}.
          </p>
        )}
      </Card>

      {/* A point in time of its own: nothing typed or done elsewhere in time shows in it. */}
      <HireForm key={`hire-${at}`} at={at} onWrite={onWrite} locationId={location.id} locations={data.locations} />
    </>
  );
}

const FIELDS = ['firstName', 'lastName', 'dateOfBirth', 'jobTitle', 'locationId', 'id'] as const;

function HireForm({ at, onWrite, locationId, locations }: Pick<ViewProps, 'at' | 'onWrite'> & { locationId: number; locations: LocationOption[] }): JSX.Element {
  const form = useForm({ firstName: '', lastName: '', dateOfBirth: '', jobTitle: '', locationId: String(locationId), id: '' });
  const { values, errors, set } = form;
  const F = 'hire-employee';

  const onSubmit = (): void => {
    const id = optionalId(values.id);
    const local: Record<string, string> = {};
    if (id === 'invalid') local.id = 'Enter a whole number, or leave it blank.';
    if (!/^\d{4}-\d{2}-\d{2}$/.test(values.dateOfBirth)) local.dateOfBirth = 'Enter the date of birth.';
    if (Object.keys(local).length > 0) {
      form.setErrors({ fields: local, form: null });
      return;
    }
    void form.submit(
      (idempotencyKey) =>
        mutate(
          CREATE_EMPLOYEE,
          {
            firstName: values.firstName,
            lastName: values.lastName,
            dateOfBirth: values.dateOfBirth,
            jobTitle: values.jobTitle,
            locationId: Number(values.locationId),
            ...(id === undefined || id === 'invalid' ? {} : { id }),
            idempotencyKey,
          },
          'createEmployee',
          FIELDS,
        ),
      (payload) => {
        onWrite(payload.position);
        const { firstName, lastName, location } = payload.employee;
        return { message: `${firstName} ${lastName} was hired${location ? ` at ${location.city}` : ''}.` };
      },
    );
  };

  return (
    <FormCard id={F} cardId="hire-card" title="Hire an employee" legend="New employee" at={at} form={form} onSubmit={onSubmit} submit={{ label: 'Hire', busy: 'Hiring…' }} grid>
      <TextField form={F} name="firstName" label="First name" value={values.firstName} error={errors.fields.firstName} onValue={set('firstName')} />
      <TextField form={F} name="lastName" label="Last name" value={values.lastName} error={errors.fields.lastName} onValue={set('lastName')} />
      <TextField form={F} name="dateOfBirth" label="Date of birth" type="date" value={values.dateOfBirth} error={errors.fields.dateOfBirth} onValue={set('dateOfBirth')} />
      <TextField form={F} name="jobTitle" label="Job title" value={values.jobTitle} error={errors.fields.jobTitle} onValue={set('jobTitle')} />
      <SelectField
        form={F}
        name="locationId"
        label="Location"
        value={values.locationId}
        error={errors.fields.locationId}
        onValue={set('locationId')}
        options={locations.map((l) => ({ value: String(l.id), label: `${l.city} — ${l.streetAddress} (#${l.id})` }))}
      />
      <TextField form={F} name="id" label="Id (optional)" value={values.id} error={errors.fields.id} onValue={set('id')} inputMode="numeric" hint="Leave blank for the next free id." />
    </FormCard>
  );
}
