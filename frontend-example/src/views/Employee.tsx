import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import {
  ASSIGN_EMPLOYEE,
  CHANGE_TITLE,
  EMPLOYEE_PAGE,
  FORGET,
  TERMINATE,
  mutate,
  type EmployeeDetail,
  type LocationOption,
} from '../api';
import { FormCard, SelectField, TextField, useForm } from '../fields';
import { age, eventSummary, eventTitle, formatDate, formatDateTime, personName } from '../format';
import { href, navigate } from '../router';
import { Card, Empty, ErrorBanner, PageTitle, Skeleton } from '../ui';
import { useQuery } from '../useQuery';
import type { ViewProps } from './types';

export function EmployeeView({ id, at, refresh, onWrite, notify }: ViewProps & { id: number }): JSX.Element {
  const { data, answers, error } = useQuery(EMPLOYEE_PAGE, { id, at, stream: `employee-${id}` }, refresh);
  const shownAt = answers ? answers.at : at; // the point in time of the employee on screen
  const employee = data?.employee;
  const crumbs = (
    <nav aria-label="Breadcrumb" class="breadcrumbs">
      <a href={href.locations}>Locations</a> <span aria-hidden="true">/</span>{' '}
      {employee?.location ? (
        <>
          <a href={href.location(employee.location.id)}>{employee.location.city}</a> <span aria-hidden="true">/</span>{' '}
        </>
      ) : null}
      <span>Employee #{id}</span>
    </nav>
  );

  if (!data) {
    return (
      <>
        <PageTitle eyebrow={crumbs}>Employee #{id}</PageTitle>
        {error ? <ErrorBanner>Could not load employee #{id}: {error}</ErrorBanner> : <Skeleton rows={4} />}
      </>
    );
  }
  const history = data.events.filter((e) => at === null || e.position <= at);
  const cityOf = (locationId: number): string | undefined => data.locations.find((l) => l.id === locationId)?.city;

  return (
    <>
      <PageTitle eyebrow={crumbs}>{employee ? personName(employee) : `Employee #${id}`}</PageTitle>
      {error && <ErrorBanner>{error}</ErrorBanner>}
      {employee ? (
        <>
          <p class="lede">
            {employee.jobTitle} at{' '}
            {employee.location ? <a href={href.location(employee.location.id)}>{employee.location.city}</a> : `location #${employee.locationId}`}
          </p>
          <dl class="facts" id="employee-facts">
            <div>
              <dt>Location</dt>
              <dd id="employee-location">{employee.location ? employee.location.city : `#${employee.locationId}`}</dd>
            </div>
            <div>
              <dt>Job title</dt>
              <dd id="employee-title">{employee.jobTitle}</dd>
            </div>
            <div>
              <dt>Born</dt>
              <dd id="employee-born">
                {employee.dateOfBirth == null ? (
                  <span class="muted">erased</span>
                ) : (
                  <>
                    {formatDate(employee.dateOfBirth)} <span class="muted">({age(employee.dateOfBirth)})</span>
                  </>
                )}
              </dd>
            </div>
            <div>
              <dt>Version</dt>
              <dd id="employee-version">{employee.version}</dd>
            </div>
          </dl>
          {/* Each point in time shown gets forms of its own: a move made now shows neither its
              note nor its choice in the past, where the form starts from where the employee was. */}
          <div class="two-col">
            <MoveForm key={`move-${employee.id}-${shownAt}`} employee={employee} locations={data.locations} at={at} onWrite={onWrite} />
            <TitleForm key={`title-${employee.id}-${shownAt}`} employee={employee} at={at} onWrite={onWrite} />
          </div>
          <TerminateCard key={`terminate-${employee.id}-${shownAt}`} employee={employee} at={at} onWrite={onWrite} notify={notify} />
          {employee.personalDataErased ? (
            <p class="muted" id="employee-erased">
              This employee's personal data (names, date of birth) was erased at their request: it reads as erased now and at every
              point in the past.
            </p>
          ) : (
            <ForgetCard key={`forget-${employee.id}-${shownAt}`} employee={employee} at={at} onWrite={onWrite} notify={notify} />
          )}
        </>
      ) : (
        <Empty id="employee-missing" title={at === null ? `Employee #${id} is not on the payroll` : `Employee #${id} was not on the payroll at position ${at}`}>
          {history.length > 0 ? 'Not hired yet at this point, or already terminated — see the history below.' : 'There is no such employee.'}
        </Empty>
      )}

      {history.length > 0 && (
        <Card title="History" id="employee-history">
          <ol class="timeline">
            {history.map((e) => (
              <li key={e.position}>
                <span class="timeline-pos">#{e.position}</span>
                <span class="timeline-title">{eventTitle(e.type)}</span>
                <span class="timeline-summary">{eventSummary(e, cityOf)}</span>
                <time dateTime={e.recordedAt} class="muted">
                  {formatDateTime(e.recordedAt)}
                </time>
              </li>
            ))}
          </ol>
        </Card>
      )}
    </>
  );
}

interface EmployeeFormProps {
  employee: EmployeeDetail;
  at: number | null;
  onWrite: (position: number) => void;
}

function MoveForm({ employee, locations, at, onWrite }: EmployeeFormProps & { locations: LocationOption[] }): JSX.Element {
  const others = locations.filter((l) => l.id !== employee.locationId);
  // Now: the first other location, ready to move to; in the past: where the employee was.
  const initial = at === null && others[0] ? others[0].id : employee.locationId;
  const form = useForm({ locationId: String(initial) });
  const F = 'move-employee';
  const options = locations.map((l) => ({
    value: String(l.id),
    label: `${l.city} — ${l.streetAddress}${l.id === employee.locationId ? ' (current)' : ''}`,
  }));

  const onSubmit = (): void => {
    void form.submit(
      (idempotencyKey) =>
        mutate(
          ASSIGN_EMPLOYEE,
          { employeeId: employee.id, locationId: Number(form.values.locationId), expectedVersion: employee.version, idempotencyKey },
          'assignEmployeeToLocation',
          ['locationId'],
        ),
      (payload) => {
        onWrite(payload.position);
        return { message: `Moved to ${payload.employee.location?.city ?? `location #${form.values.locationId}`}.`, reset: false };
      },
    );
  };

  return (
    <FormCard id={F} cardId="move-card" title="Move to another location" legend={`Move ${personName(employee)}`} at={at} form={form} onSubmit={onSubmit} submit={{ label: 'Move', busy: 'Moving…' }}>
      <SelectField form={F} name="locationId" label="New location" value={form.values.locationId} error={form.errors.fields.locationId} onValue={form.set('locationId')} options={options} />
    </FormCard>
  );
}

function TitleForm({ employee, at, onWrite }: EmployeeFormProps): JSX.Element {
  const form = useForm({ jobTitle: '' });
  const F = 'change-title';

  const onSubmit = (): void => {
    void form.submit(
      (idempotencyKey) =>
        mutate(
          CHANGE_TITLE,
          { employeeId: employee.id, jobTitle: form.values.jobTitle, expectedVersion: employee.version, idempotencyKey },
          'changeEmployeeJobTitle',
          ['jobTitle'],
        ),
      (payload) => {
        onWrite(payload.position);
        return { message: `${personName(payload.employee)} is now ${payload.employee.jobTitle}.` };
      },
    );
  };

  return (
    <FormCard id={F} cardId="title-card" title="Change job title" legend={`New job title for ${personName(employee)}`} at={at} form={form} onSubmit={onSubmit} submit={{ label: 'Change title', busy: 'Saving…' }}>
      <TextField form={F} name="jobTitle" label="New job title" value={form.values.jobTitle} placeholder={employee.jobTitle} error={form.errors.fields.jobTitle} onValue={form.set('jobTitle')} />
    </FormCard>
  );
}

function TerminateCard({ employee, at, onWrite, notify }: EmployeeFormProps & { notify: (message: string) => void }): JSX.Element {
  const [confirming, setConfirming] = useState(false);
  const form = useForm({});
  const F = 'terminate-employee';
  const name = personName(employee);
  const locationId = employee.locationId;

  const terminate = (): void => {
    void form.submit(
      (idempotencyKey) =>
        mutate(TERMINATE, { employeeId: employee.id, expectedVersion: employee.version, idempotencyKey }, 'terminateEmployee', []),
      (payload) => {
        onWrite(payload.position);
        notify(`${name} was terminated.`);
        navigate(href.location(locationId));
        return { message: `${name} was terminated.` };
      },
    );
  };

  return (
    <FormCard id={F} cardId="terminate-card" cardClass="card-danger" title="Terminate employment" legend={`Terminate ${name}`} at={at} form={form} onSubmit={() => (confirming ? terminate() : setConfirming(true))}>
      {confirming ? (
        <div class="confirm" role="group" aria-label="Confirm termination">
          <p>
            Terminate <strong>{name}</strong>? They leave {employee.location?.city ?? 'their location'} and the payroll. History keeps
            them.
          </p>
          <div class="button-row">
            <button type="submit" class="button button-danger">
              {form.busy ? 'Terminating…' : 'Yes, terminate'}
            </button>
            <button type="button" class="button" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </div>
        </div>
      ) : (
        <div class="button-row">
          <p class="muted grow">Removes {name} from the payroll. Time travel still shows them.</p>
          <button type="submit" class="button button-danger-outline">
            Terminate…
          </button>
        </div>
      )}
    </FormCard>
  );
}

/** Erasure at the employee's request (`forgetEmployee`, role admin when auth is on). */
function ForgetCard({ employee, at, onWrite, notify }: EmployeeFormProps & { notify: (message: string) => void }): JSX.Element {
  const [confirming, setConfirming] = useState(false);
  const form = useForm({});
  const F = 'forget-employee';
  const name = personName(employee);

  const forget = (): void => {
    void form.submit(
      (idempotencyKey) => mutate(FORGET, { employeeId: employee.id, idempotencyKey }, 'forgetEmployee', []),
      (payload) => {
        onWrite(payload.position);
        notify(`The personal data of employee #${employee.id} was erased.`);
        setConfirming(false);
        return { message: 'Personal data erased.' };
      },
    );
  };

  return (
    <FormCard id={F} cardId="forget-card" cardClass="card-danger" title="Forget personal data" legend={`Forget ${name}`} at={at} form={form} onSubmit={() => (confirming ? forget() : setConfirming(true))}>
      {confirming ? (
        <div class="confirm" role="group" aria-label="Confirm erasure">
          <p>
            Erase <strong>{name}</strong>'s names and date of birth for good, now and in every past view? Job title, location and
            history stay. This cannot be undone.
          </p>
          <div class="button-row">
            <button type="submit" class="button button-danger">
              {form.busy ? 'Erasing…' : 'Yes, erase'}
            </button>
            <button type="button" class="button" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </div>
        </div>
      ) : (
        <div class="button-row">
          <p class="muted grow">At the employee's request: erases their personal data everywhere (needs the admin role).</p>
          <button type="submit" class="button button-danger-outline">
            Forget…
          </button>
        </div>
      )}
    </FormCard>
  );
}
