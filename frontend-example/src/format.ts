import type { LogEvent } from './api';

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const date = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });

export const formatDateTime = (iso: string): string => dateTime.format(new Date(iso));
export const formatTime = (iso: string): string => time.format(new Date(iso));
/** A calendar date (`YYYY-MM-DD`), shown without shifting it through the local time zone. */
export const formatDate = (isoDate: string): string => date.format(new Date(`${isoDate}T00:00:00Z`));

export function age(isoDate: string, today = new Date()): number {
  const [y, m, d] = isoDate.split('-').map(Number);
  let years = today.getFullYear() - y;
  if (today.getMonth() + 1 < m || (today.getMonth() + 1 === m && today.getDate() < d)) years -= 1;
  return years;
}

/** An employee's name, or what stands for it once their personal data was erased. */
export const personName = (e: { id: number; firstName: string | null; lastName: string | null }): string =>
  e.firstName === null && e.lastName === null ? `Employee #${e.id} (erased)` : `${str(e.firstName)} ${str(e.lastName)}`;

export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

const TITLES: Record<string, string> = {
  LocationCreated: 'Location opened',
  EmployeeCreated: 'Employee hired',
  EmployeeAssignedToLocation: 'Assigned to location',
  EmployeeRemovedFromLocation: 'Removed from location',
  EmployeeJobTitleChanged: 'Job title changed',
  EmployeeTerminated: 'Employee terminated',
  EmployeePersonalDataErased: 'Personal data erased',
};

export const eventTitle = (type: string): string =>
  TITLES[type] ?? type.replace(/([a-z])([A-Z])/g, '$1 $2');

const str = (value: unknown): string => (value === undefined || value === null ? '' : String(value));

/** One line about what an event did, from its data. */
export function eventSummary(event: Pick<LogEvent, 'type' | 'data'>, cityOf?: (id: number) => string | undefined): string {
  const d = event.data;
  const place = (id: unknown): string => {
    const city = cityOf?.(Number(id));
    return city ? `${city} (#${str(id)})` : `location #${str(id)}`;
  };
  switch (event.type) {
    case 'LocationCreated':
      return `${str(d.city)} — ${str(d.street_address)}, ${str(d.state)} ${str(d.postal_code)}`;
    case 'EmployeeCreated':
      return d.first_name === null && d.last_name === null
        ? `Employee #${str(d.employee_id)} (name erased), ${str(d.job_title)}`
        : `${str(d.first_name)} ${str(d.last_name)}, ${str(d.job_title)}`;
    case 'EmployeeAssignedToLocation':
      return `Employee #${str(d.employee_id)} → ${place(d.location_id)}`;
    case 'EmployeeRemovedFromLocation':
      return `Employee #${str(d.employee_id)} left ${place(d.location_id)}`;
    case 'EmployeeJobTitleChanged':
      return `Employee #${str(d.employee_id)} is now ${str(d.job_title)}`;
    case 'EmployeeTerminated':
    case 'EmployeePersonalDataErased':
      return `Employee #${str(d.employee_id)}`;
    default:
      return JSON.stringify(d);
  }
}
