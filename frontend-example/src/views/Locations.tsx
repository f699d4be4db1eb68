import type { JSX } from 'preact';
import { CREATE_LOCATION, LOCATIONS, mutate } from '../api';
import { FormCard, TextField, optionalId, useForm } from '../fields';
import { plural } from '../format';
import { href } from '../router';
import { Empty, ErrorBanner, PageTitle, Skeleton } from '../ui';
import { useQuery } from '../useQuery';
import type { ViewProps } from './types';

export function LocationsView({ at, refresh, onWrite }: ViewProps): JSX.Element {
  const { data, error } = useQuery(LOCATIONS, { at }, refresh);
  const locations = data?.locations;
  const staff = locations?.reduce((sum, l) => sum + l.employeeCount, 0) ?? 0;

  return (
    <>
      <PageTitle eyebrow="Restaurant network">Locations</PageTitle>
      {locations && (
        <p class="lede" id="locations-summary">
          {plural(locations.length, 'location')} · {plural(staff, 'employee')}
        </p>
      )}
      {error && <ErrorBanner>Could not load the locations: {error}</ErrorBanner>}
      {!locations ? (
        error ? null : <Skeleton rows={3} />
      ) : locations.length === 0 ? (
        <Empty id="locations-empty" title={at === null ? 'No locations yet' : 'No locations at this point in time'}>
          {at === null ? 'Open the first restaurant with the form below.' : 'Move the time slider to the right to see later states.'}
        </Empty>
      ) : (
        <ul class="location-grid" id="location-list" aria-label="Locations">
          {locations.map((l) => (
            <li key={l.id} class="location-card" data-location-id={l.id}>
              <a href={href.location(l.id)}>
                <span class="card-id">#{l.id}</span>
                <span class="location-city">{l.city}</span>
                <span class="location-address">
                  {l.streetAddress}, {l.state} {l.postalCode}
                </span>
                <span class={l.employeeCount ? 'badge' : 'badge badge-muted'} data-testid="employee-count">
                  {plural(l.employeeCount, 'employee')}
                </span>
              </a>
            </li>
          ))}
        </ul>
      )}
      {/* A point in time of its own: nothing typed or done elsewhere in time shows in it. */}
      <CreateLocationForm key={`create-${at}`} at={at} onWrite={onWrite} />
    </>
  );
}

const FIELDS = ['streetAddress', 'city', 'state', 'postalCode', 'id'] as const;

function CreateLocationForm({ at, onWrite }: Pick<ViewProps, 'at' | 'onWrite'>): JSX.Element {
  const form = useForm({ streetAddress: '', city: '', state: '', postalCode: '', id: '' });
  const { values, errors, set } = form;
  const F = 'create-location';

  const onSubmit = (): void => {
    const id = optionalId(values.id);
    if (id === 'invalid') {
      form.setErrors({ fields: { id: 'Enter a whole number, or leave it blank.' }, form: null });
      return;
    }
    void form.submit(
      (idempotencyKey) =>
        mutate(
          CREATE_LOCATION,
          {
            streetAddress: values.streetAddress,
            city: values.city,
            state: values.state,
            postalCode: values.postalCode,
            ...(id === undefined ? {} : { id }),
            idempotencyKey,
          },
          'createLocation',
          FIELDS,
        ),
      (payload) => {
        onWrite(payload.position);
        return { message: `${payload.location.city} (#${payload.location.id}) is open.` };
      },
    );
  };

  return (
    <FormCard id={F} cardId="create-location-card" title="Open a new location" legend="New location" at={at} form={form} onSubmit={onSubmit} submit={{ label: 'Open location', busy: 'Opening…' }} grid>
      <TextField form={F} name="streetAddress" label="Street address" value={values.streetAddress} error={errors.fields.streetAddress} onValue={set('streetAddress')} autoComplete="street-address" wide />
      <TextField form={F} name="city" label="City" value={values.city} error={errors.fields.city} onValue={set('city')} />
      <TextField form={F} name="state" label="State" value={values.state} error={errors.fields.state} onValue={set('state')} />
      <TextField form={F} name="postalCode" label="Postal code" value={values.postalCode} error={errors.fields.postalCode} onValue={set('postalCode')} />
      <TextField form={F} name="id" label="Id (optional)" value={values.id} error={errors.fields.id} onValue={set('id')} inputMode="numeric" hint="Leave blank for the next free id." />
    </FormCard>
  );
}
