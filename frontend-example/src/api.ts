// The two standard clients: @urql/core for queries and mutations over HTTP, graphql-ws for
// subscriptions (the graphql-transport-ws protocol). Both talk to /graphql on this origin: the
// API serves the built SPA itself, and `npm run dev` proxies /graphql (HTTP and ws) to it.
import { Client, fetchExchange, type AnyVariables, type CombinedError } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';

export const client = new Client({
  url: '/graphql',
  exchanges: [fetchExchange],
  // The read model changes under us (other windows, other users): never answer from a cache.
  requestPolicy: 'network-only',
  preferGetMethod: false,
});

function websocketUrl(): string {
  const url = new URL('/graphql', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

// ---------------------------------------------------------------------------------------------
// Connection state of the websocket, for the "Live" indicator and to re-query after a reconnect.

export type LinkState = 'connecting' | 'live' | 'offline';
type LinkListener = (state: LinkState) => void;
const linkListeners = new Set<LinkListener>();
let linkState: LinkState = 'connecting';

function setLinkState(state: LinkState): void {
  linkState = state;
  for (const listener of linkListeners) listener(state);
}

export function onLinkState(listener: LinkListener): () => void {
  linkListeners.add(listener);
  listener(linkState);
  return () => linkListeners.delete(listener);
}

export const ws = createWsClient({
  url: websocketUrl(),
  lazy: false, // connect at once, so the header can tell whether live updates work
  keepAlive: 10_000,
  retryAttempts: Number.POSITIVE_INFINITY,
  shouldRetry: () => true,
  retryWait: (retries) =>
    new Promise((resolve) =>
      setTimeout(resolve, Math.min(500 * 2 ** retries, 8_000) + Math.random() * 300),
    ),
  on: {
    connecting: () => setLinkState('connecting'),
    connected: () => setLinkState('live'),
    closed: () => setLinkState('offline'),
  },
  onNonLazyError: () => {
    /* retried forever; the indicator shows it */
  },
});

/**
 * Subscribe, and subscribe again (after a pause) whenever the server ends the subscription or
 * reports an error (for example CHANGES_INTERRUPTED): the caller re-queries in `onRestart`.
 * `variables` is read at every (re)subscription. Returns a function that stops it for good.
 */
export function keepSubscribed<T>(
  query: string,
  variables: () => Record<string, unknown>,
  onData: (data: T) => void,
  onRestart?: () => void,
): () => void {
  let stopped = false;
  let dispose: (() => void) | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const restart = (): void => {
    dispose = null;
    if (stopped || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      onRestart?.();
      start();
    }, 1_000);
  };
  const start = (): void => {
    if (stopped) return;
    dispose = ws.subscribe<T>(
      { query, variables: variables() },
      {
        next: (result) => {
          if (result.data) onData(result.data as T);
        },
        error: restart,
        complete: restart,
      },
    );
  };
  start();
  return () => {
    stopped = true;
    clearTimeout(timer);
    dispose?.();
  };
}

// ---------------------------------------------------------------------------------------------
// Errors

/** A GraphQL or network error, in words a person can act on. */
export function describeError(error: CombinedError): string {
  if (error.networkError && error.graphQLErrors.length === 0) {
    return `The API cannot be reached (${error.networkError.message}).`;
  }
  return error.graphQLErrors
    .map((e) => {
      const code = e.extensions?.code;
      return typeof code === 'string' ? `${e.message} (${code})` : e.message;
    })
    .join(' ');
}

export async function query<T>(document: string, variables: AnyVariables = {}): Promise<T> {
  const result = await client.query(document, variables).toPromise();
  if (result.error) throw new Error(describeError(result.error));
  return result.data as T;
}

export interface FormErrors {
  /** Messages by camelCase input field name (FieldError.field). */
  fields: Record<string, string>;
  /** Everything that belongs to no field of the form: shown above the submit button. */
  form: string | null;
}

export const NO_ERRORS: FormErrors = { fields: {}, form: null };

interface ErrorResult {
  __typename: string;
  message?: string;
  code?: string;
  fields?: { field: string; message: string }[];
}

export type Outcome<P> =
  | { ok: true; payload: P }
  | { ok: false; errors: FormErrors; network: boolean };

/**
 * Run a mutation whose result is a union of a `...Payload` and `Error` types, and sort what
 * went wrong: ValidationError fields beside their inputs (`fieldNames`), the rest plainly.
 */
export async function mutate<P>(
  document: string,
  input: Record<string, unknown>,
  resultField: string,
  fieldNames: readonly string[],
): Promise<Outcome<P>> {
  const result = await client.mutation(document, { input }).toPromise();
  if (result.error) {
    return {
      ok: false,
      network: Boolean(result.error.networkError),
      errors: { fields: {}, form: describeError(result.error) },
    };
  }
  const data = (result.data as Record<string, unknown> | undefined)?.[resultField] as
    | (ErrorResult & P)
    | undefined;
  if (!data) {
    return { ok: false, network: false, errors: { fields: {}, form: 'The API gave no answer.' } };
  }
  if (data.__typename.endsWith('Payload')) return { ok: true, payload: data };
  if (data.__typename === 'ValidationError' && data.fields && data.fields.length > 0) {
    const fields: Record<string, string> = {};
    const other: string[] = [];
    for (const { field, message } of data.fields) {
      if (fieldNames.includes(field)) fields[field] = fields[field] ? `${fields[field]} ${message}` : message;
      else other.push(message);
    }
    return { ok: false, network: false, errors: { fields, form: other.length ? other.join(' ') : null } };
  }
  return { ok: false, network: false, errors: { fields: {}, form: data.message ?? data.__typename } };
}

// ---------------------------------------------------------------------------------------------
// Documents and the shapes they return

export interface LocationSummary {
  id: number;
  streetAddress: string;
  city: string;
  state: string;
  postalCode: string;
  employeeCount: number;
}

export interface LocationOption {
  id: number;
  city: string;
  streetAddress: string;
}

export interface EmployeeRow {
  id: number;
  /** Null once the employee's personal data was erased (`personalDataErased`). */
  firstName: string | null;
  lastName: string | null;
  jobTitle: string;
  dateOfBirth: string | null;
  personalDataErased: boolean;
}

export interface EmployeeDetail extends EmployeeRow {
  locationId: number;
  version: number;
  updatedAt: string;
  location: LocationOption | null;
}

export interface LogEvent {
  position: number;
  type: string;
  streamId: string;
  recordedAt: string;
  data: Record<string, unknown>;
}

export const LOCATIONS = /* GraphQL */ `
  query Locations($at: Int) {
    locations(atPosition: $at) { id streetAddress city state postalCode employeeCount }
  }
`;
export interface LocationsData {
  locations: LocationSummary[];
}

export const LOCATION_PAGE = /* GraphQL */ `
  query LocationPage($id: Int!, $at: Int, $first: Int!) {
    location(id: $id, atPosition: $at) {
      id streetAddress city state postalCode employeeCount version updatedAt
    }
    employees(locationId: $id, first: $first, atPosition: $at) {
      totalCount
      pageInfo { hasNextPage }
      edges { node { id firstName lastName jobTitle dateOfBirth personalDataErased } }
    }
    locations(atPosition: $at) { id city streetAddress }
  }
`;
export interface LocationPageData {
  location: (LocationSummary & { version: number; updatedAt: string }) | null;
  employees: { totalCount: number; pageInfo: { hasNextPage: boolean }; edges: { node: EmployeeRow }[] };
  locations: LocationOption[];
}

export const EMPLOYEE_PAGE = /* GraphQL */ `
  query EmployeePage($id: Int!, $at: Int, $stream: String!) {
    employee(id: $id, atPosition: $at) {
      id firstName lastName dateOfBirth personalDataErased jobTitle locationId version updatedAt
      location { id city streetAddress }
    }
    locations(atPosition: $at) { id city streetAddress }
    events(streamId: $stream, first: 500) { position type streamId recordedAt data }
  }
`;
export interface EmployeePageData {
  employee: EmployeeDetail | null;
  locations: LocationOption[];
  events: LogEvent[];
}

export const STATUS = /* GraphQL */ `
  query Status { projectionStatus { position headPosition } }
`;
export interface StatusData {
  projectionStatus: { position: number; headPosition: number };
}

export const EVENTS = /* GraphQL */ `
  query Events($after: Int!, $first: Int!) {
    events(after: $after, first: $first) { position type streamId recordedAt data }
  }
`;
export interface EventsData {
  events: LogEvent[];
}

export const LOCATION_CHANGES = /* GraphQL */ `
  subscription LocationChanges { locationChanged { position kind locationId } }
`;
export interface LocationChangesData {
  locationChanged: { position: number; kind: string; locationId: number };
}

export const EMPLOYEE_CHANGES = /* GraphQL */ `
  subscription EmployeeChanges { employeeChanged { position kind employeeId } }
`;
export interface EmployeeChangesData {
  employeeChanged: { position: number; kind: string; employeeId: number };
}

export const EVENT_FEED = /* GraphQL */ `
  subscription EventFeed($after: Int) {
    events(after: $after) { position type streamId recordedAt data }
  }
`;
export interface EventFeedData {
  events: LogEvent;
}

const ERROR_FIELDS = /* GraphQL */ `
  ... on ValidationError { message code fields { field message } }
  ... on Error { message code }
`;

export const CREATE_LOCATION = /* GraphQL */ `
  mutation CreateLocation($input: CreateLocationInput!) {
    createLocation(input: $input) {
      __typename
      ... on LocationPayload { position location { id city } }
      ${ERROR_FIELDS}
    }
  }
`;
export interface LocationPayload {
  position: number;
  location: { id: number; city: string };
}

export const CREATE_EMPLOYEE = /* GraphQL */ `
  mutation CreateEmployee($input: CreateEmployeeInput!) {
    createEmployee(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName location { id city } } }
      ${ERROR_FIELDS}
    }
  }
`;
export const ASSIGN_EMPLOYEE = /* GraphQL */ `
  mutation AssignEmployee($input: AssignEmployeeToLocationInput!) {
    assignEmployeeToLocation(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName location { id city } } }
      ${ERROR_FIELDS}
    }
  }
`;
export const CHANGE_TITLE = /* GraphQL */ `
  mutation ChangeTitle($input: ChangeEmployeeJobTitleInput!) {
    changeEmployeeJobTitle(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName jobTitle } }
      ${ERROR_FIELDS}
    }
  }
`;
export interface EmployeePayload {
  position: number;
  employee: {
    id: number;
    firstName: string | null;
    lastName: string | null;
    jobTitle?: string;
    location?: { id: number; city: string } | null;
  };
}

export const TERMINATE = /* GraphQL */ `
  mutation Terminate($input: TerminateEmployeeInput!) {
    terminateEmployee(input: $input) {
      __typename
      ... on TerminatePayload { position employeeId }
      ... on Error { message code }
    }
  }
`;
export interface TerminatePayload {
  position: number;
  employeeId: number;
}

export const FORGET = /* GraphQL */ `
  mutation Forget($input: ForgetEmployeeInput!) {
    forgetEmployee(input: $input) {
      __typename
      ... on ForgetEmployeePayload { position employeeId }
      ... on Error { message code }
    }
  }
`;
export interface ForgetPayload {
  position: number;
  employeeId: number;
}
