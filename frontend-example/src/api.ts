// The two standard clients: @urql/core for queries and mutations over HTTP, graphql-ws for
// subscriptions (the graphql-transport-ws protocol). Both talk to /graphql on this origin: the
// API serves the built SPA itself, and `npm run dev` proxies /graphql (HTTP and ws) to it.
import { Client, fetchExchange, type AnyVariables, type CombinedError, type TypedDocumentNode } from '@urql/core';
import { print } from 'graphql';
import { createClient as createWsClient } from 'graphql-ws';
import { graphql } from './gql';
import type { EmployeePageQuery, EventsQuery, LocationPageQuery } from './gql/graphql';

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
export function keepSubscribed<Data, Variables extends Record<string, unknown>>(
  document: TypedDocumentNode<Data, Variables>,
  variables: () => Variables,
  onData: (data: Data) => void,
  onRestart?: () => void,
): () => void {
  const query = print(document);
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
    dispose = ws.subscribe<Data>(
      { query, variables: variables() },
      {
        next: (result) => {
          if (result.data) onData(result.data);
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

export async function query<Data, Variables extends AnyVariables>(
  document: TypedDocumentNode<Data, Variables>,
  variables: Variables,
): Promise<Data> {
  const result = await client.query(document, variables).toPromise();
  if (result.error) throw new Error(describeError(result.error));
  if (result.data === undefined) throw new Error('The API gave no answer.');
  return result.data;
}

export interface FormErrors {
  /** Messages by camelCase input field name (FieldError.field). */
  fields: Record<string, string>;
  /** Everything that belongs to no field of the form: shown above the submit button. */
  form: string | null;
}

export const NO_ERRORS: FormErrors = { fields: {}, form: null };

/** What every member of a mutation's result union has: a payload, or an Error (`...Refusal`). */
interface ResultMember {
  __typename: string;
  message?: string;
  fields?: readonly { field: string; message: string }[];
}

/** The payload member(s) of a result union: those whose type name ends in `Payload`. */
export type PayloadOf<Member> = Extract<Member, { __typename: `${string}Payload` }>;

function isPayload<Member extends ResultMember>(member: Member): member is PayloadOf<Member> {
  return member.__typename.endsWith('Payload');
}

export type Outcome<P> =
  | { ok: true; payload: P }
  | { ok: false; errors: FormErrors; network: boolean };

/**
 * Run a mutation whose result is a union of a `...Payload` and `Error` types, and sort what
 * went wrong: ValidationError fields beside their inputs (`fieldNames`), the rest plainly.
 */
export async function mutate<Data extends Record<Field, ResultMember>, Field extends keyof Data & string, Input>(
  document: TypedDocumentNode<Data, { input: Input }>,
  input: Input,
  resultField: Field,
  fieldNames: readonly string[],
): Promise<Outcome<PayloadOf<Data[Field]>>> {
  const result = await client.mutation(document, { input }).toPromise();
  if (result.error) {
    return {
      ok: false,
      network: Boolean(result.error.networkError),
      errors: { fields: {}, form: describeError(result.error) },
    };
  }
  const data = result.data?.[resultField];
  if (!data) {
    return { ok: false, network: false, errors: { fields: {}, form: 'The API gave no answer.' } };
  }
  if (isPayload(data)) return { ok: true, payload: data };
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
// Documents. Their result and variable types are generated from the schema (schema.graphql at
// the repository root) by `npm run codegen` into src/gql/: `npm run build` fails when one of
// them asks for something the schema does not have.

export const LOCATIONS = graphql(`
  query Locations($at: Int) {
    locations(atPosition: $at) { id streetAddress city state postalCode employeeCount }
  }
`);

export const LOCATION_PAGE = graphql(`
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
`);

export const EMPLOYEE_PAGE = graphql(`
  query EmployeePage($id: Int!, $at: Int, $stream: String!) {
    employee(id: $id, atPosition: $at) {
      id firstName lastName dateOfBirth personalDataErased jobTitle locationId version updatedAt
      location { id city streetAddress }
    }
    locations(atPosition: $at) { id city streetAddress }
    events(streamId: $stream, first: 500) { position type streamId recordedAt data }
  }
`);

export const STATUS = graphql(`
  query Status { projectionStatus { position headPosition } }
`);

export const EVENTS = graphql(`
  query Events($after: Int!, $first: Int!) {
    events(after: $after, first: $first) { position type streamId recordedAt data }
  }
`);

export const LOCATION_CHANGES = graphql(`
  subscription LocationChanges { locationChanged { position kind locationId } }
`);

export const EMPLOYEE_CHANGES = graphql(`
  subscription EmployeeChanges { employeeChanged { position kind employeeId } }
`);

export const EVENT_FEED = graphql(`
  subscription EventFeed($after: Int) {
    events(after: $after) { position type streamId recordedAt data }
  }
`);

// Why a mutation was refused: every member of a result union but its payload implements Error.
graphql(`
  fragment Refusal on Error {
    message
    code
    ... on ValidationError { fields { field message } }
  }
`);

export const CREATE_LOCATION = graphql(`
  mutation CreateLocation($input: CreateLocationInput!) {
    createLocation(input: $input) {
      __typename
      ... on LocationPayload { position location { id city } }
      ...Refusal
    }
  }
`);

export const CREATE_EMPLOYEE = graphql(`
  mutation CreateEmployee($input: CreateEmployeeInput!) {
    createEmployee(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName location { id city } } }
      ...Refusal
    }
  }
`);

export const ASSIGN_EMPLOYEE = graphql(`
  mutation AssignEmployee($input: AssignEmployeeToLocationInput!) {
    assignEmployeeToLocation(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName location { id city } } }
      ...Refusal
    }
  }
`);

export const CHANGE_TITLE = graphql(`
  mutation ChangeTitle($input: ChangeEmployeeJobTitleInput!) {
    changeEmployeeJobTitle(input: $input) {
      __typename
      ... on EmployeePayload { position employee { id firstName lastName jobTitle } }
      ...Refusal
    }
  }
`);

export const TERMINATE = graphql(`
  mutation Terminate($input: TerminateEmployeeInput!) {
    terminateEmployee(input: $input) {
      __typename
      ... on TerminatePayload { position employeeId }
      ...Refusal
    }
  }
`);

export const FORGET = graphql(`
  mutation Forget($input: ForgetEmployeeInput!) {
    forgetEmployee(input: $input) {
      __typename
      ... on ForgetEmployeePayload { position employeeId }
      ...Refusal
    }
  }
`);

// Shapes the views pass around, named after the generated results they come from.
export type LocationOption = LocationPageQuery['locations'][number];
export type EmployeeDetail = NonNullable<EmployeePageQuery['employee']>;
export type LogEvent = EventsQuery['events'][number];
