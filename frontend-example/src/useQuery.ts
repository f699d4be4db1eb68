import { useEffect, useRef, useState } from 'preact/hooks';
import { client, describeError } from './api';

export interface QueryState<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
}

/**
 * Run `document` whenever its variables or `refresh` change. The previous answer stays on screen
 * while the next one loads (no flicker while dragging the time slider or on live updates), and an
 * answer that arrives after a newer request was made is dropped.
 */
export function useQuery<T>(document: string, variables: Record<string, unknown>, refresh: number): QueryState<T> {
  const [state, setState] = useState<QueryState<T>>({ data: null, error: null, loading: true });
  const latest = useRef(0);
  const key = JSON.stringify(variables);
  useEffect(() => {
    const request = ++latest.current;
    setState((s) => (s.loading ? s : { ...s, loading: true }));
    client
      .query(document, JSON.parse(key) as Record<string, unknown>)
      .toPromise()
      .then((result) => {
        if (request !== latest.current) return;
        if (result.error) {
          const error = describeError(result.error);
          setState((s) => ({ data: s.data, error, loading: false }));
        } else {
          setState({ data: result.data as T, error: null, loading: false });
        }
      });
    return () => {
      latest.current++;
    };
  }, [document, key, refresh]);
  return state;
}
