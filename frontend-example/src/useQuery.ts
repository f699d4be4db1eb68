import { useEffect, useRef, useState } from 'preact/hooks';
import type { AnyVariables, TypedDocumentNode } from '@urql/core';
import { client, describeError } from './api';

export interface QueryState<T, Variables> {
  data: T | null;
  /** The variables `data` answers: while the next answer loads, those of the previous one. */
  answers: Variables | null;
  error: string | null;
  loading: boolean;
}

/**
 * Run `document` whenever its variables or `refresh` change. The previous answer stays on screen
 * while the next one loads (no flicker while dragging the time slider or on live updates), and an
 * answer that arrives after a newer request was made is dropped.
 */
export function useQuery<T, Variables extends AnyVariables>(
  document: TypedDocumentNode<T, Variables>,
  variables: Variables,
  refresh: number,
): QueryState<T, Variables> {
  const [state, setState] = useState<QueryState<T, Variables>>({ data: null, answers: null, error: null, loading: true });
  const latest = useRef(0);
  const key = JSON.stringify(variables);
  useEffect(() => {
    const request = ++latest.current;
    setState((s) => (s.loading ? s : { ...s, loading: true }));
    client
      .query(document, variables)
      .toPromise()
      .then((result) => {
        if (request !== latest.current) return;
        if (result.error) {
          const error = describeError(result.error);
          setState((s) => ({ ...s, error, loading: false }));
        } else {
          setState({ data: result.data ?? null, answers: variables, error: null, loading: false });
        }
      });
    return () => {
      latest.current++;
    };
  }, [document, key, refresh]);
  return state;
}
