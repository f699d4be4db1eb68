// Hash routes (#/, #/locations/3, #/employees/7): the static server needs no fallback rule.
import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { name: 'locations' }
  | { name: 'location'; id: number }
  | { name: 'employee'; id: number }
  | { name: 'missing'; path: string };

export function parseHash(hash: string): Route {
  const path = hash.replace(/^#/, '') || '/';
  if (path === '/') return { name: 'locations' };
  const match = /^\/(locations|employees)\/(\d{1,10})\/?$/.exec(path);
  if (match) {
    const id = Number(match[2]);
    return match[1] === 'locations' ? { name: 'location', id } : { name: 'employee', id };
  }
  return { name: 'missing', path };
}

export const href = {
  locations: '#/',
  location: (id: number): string => `#/locations/${id}`,
  employee: (id: number): string => `#/employees/${id}`,
};

export function navigate(to: string): void {
  window.location.hash = to;
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parseHash(window.location.hash));
  useEffect(() => {
    const onChange = (): void => setRoute(parseHash(window.location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
