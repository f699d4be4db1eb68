import type { JSX } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import {
  EMPLOYEE_CHANGES,
  LOCATION_CHANGES,
  STATUS,
  keepSubscribed,
  onLinkState,
  query,
  type LinkState,
} from './api';
import { EventLog } from './EventLog';
import { href, useRoute, type Route } from './router';
import { TimeTravel } from './TimeTravel';
import { Empty, PageTitle } from './ui';
import { EmployeeView } from './views/Employee';
import { LocationView } from './views/Location';
import { LocationsView } from './views/Locations';
import type { ViewProps } from './views/types';

const routeKey = (r: Route): string => ('id' in r ? `${r.name}-${r.id}` : r.name);

export function App(): JSX.Element {
  const route = useRoute();
  const [head, setHead] = useState(0);
  const [at, setAt] = useState<number | null>(null);
  const [refresh, setRefresh] = useState(0);
  const [link, setLink] = useState<LinkState>('connecting');
  const [notice, setNotice] = useState<string | null>(null);
  const atRef = useRef(at);
  atRef.current = at;

  const bumpHead = useCallback((position: number) => setHead((h) => Math.max(h, position)), []);

  // Several changes arrive together (a move touches an employee and two locations): one re-query.
  const pending = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const scheduleRefresh = useCallback(() => {
    if (pending.current !== undefined) return;
    pending.current = setTimeout(() => {
      pending.current = undefined;
      setRefresh((n) => n + 1);
    }, 30);
  }, []);

  const loadHead = useCallback(() => {
    query(STATUS, {})
      .then((d) => bumpHead(d.projectionStatus.headPosition))
      .catch(() => undefined);
  }, [bumpHead]);

  // Live updates: on any change, re-query what is on screen (unless we are looking at the past,
  // which never changes). After a restarted subscription or a reconnect, re-query too: changes
  // may have been missed meanwhile.
  useEffect(() => {
    loadHead();
    const onChange = (position: number): void => {
      bumpHead(position);
      if (atRef.current === null) scheduleRefresh();
    };
    const catchUp = (): void => {
      loadHead();
      scheduleRefresh();
    };
    const stops = [
      keepSubscribed(LOCATION_CHANGES, () => ({}), (d) => onChange(d.locationChanged.position), catchUp),
      keepSubscribed(EMPLOYEE_CHANGES, () => ({}), (d) => onChange(d.employeeChanged.position), catchUp),
    ];
    let wasOffline = false;
    const stopLink = onLinkState((state) => {
      setLink(state);
      if (state === 'offline') wasOffline = true;
      if (state === 'live' && wasOffline) {
        wasOffline = false;
        catchUp();
      }
    });
    return () => {
      stops.forEach((stop) => stop());
      stopLink();
    };
  }, [bumpHead, loadHead, scheduleRefresh]);

  // After a navigation: focus the new page's heading (screen readers announce it) and scroll up.
  const firstRoute = useRef(true);
  const key = routeKey(route);
  useEffect(() => {
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    document.getElementById('page-title')?.focus({ preventScroll: true });
    window.scrollTo({ top: 0 });
  }, [key]);

  useEffect(() => {
    if (!notice) return;
    const timer = setTimeout(() => setNotice(null), 5_000);
    return () => clearTimeout(timer);
  }, [notice]);

  const onWrite = useCallback(
    (position: number) => {
      bumpHead(position);
      setRefresh((n) => n + 1);
    },
    [bumpHead],
  );

  const travel = useCallback((position: number | null) => setAt(position), []);
  const pick = useCallback((position: number) => setAt(position >= head ? null : position), [head]);

  const props: ViewProps = { at, refresh, onWrite, notify: setNotice };
  let view: JSX.Element;
  switch (route.name) {
    case 'locations':
      view = <LocationsView key={key} {...props} />;
      break;
    case 'location':
      view = <LocationView key={key} id={route.id} {...props} />;
      break;
    case 'employee':
      view = <EmployeeView key={key} id={route.id} {...props} />;
      break;
    default:
      view = (
        <>
          <PageTitle>Page not found</PageTitle>
          <Empty title={`Nothing lives at ${route.path}`}>
            <a href={href.locations}>Go to the locations</a>
          </Empty>
        </>
      );
  }

  return (
    <div class={at === null ? 'shell' : 'shell in-past'}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <div class="topbar-inner">
          <a class="brand" href={href.locations}>
            <img src="/favicon.svg" alt="" width={28} height={28} />
            <span>
              Restaurant Network <span class="brand-sub">operations</span>
            </span>
          </a>
          <nav class="topnav" aria-label="Main">
            <a href={href.locations} aria-current={route.name === 'locations' ? 'page' : undefined}>
              Locations
            </a>
            <a href="/graphql" target="_blank" rel="noreferrer">
              GraphiQL
            </a>
          </nav>
          <span class={`link-state ${link}`} id="link-state" role="status">
            <span class="dot" aria-hidden="true" />
            {link === 'live' ? 'Live' : link === 'connecting' ? 'Connecting…' : 'Offline — reconnecting'}
          </span>
        </div>
      </header>
      <TimeTravel head={head} at={at} onTravel={travel} />
      <div class="layout">
        <main id="main" class="content" aria-busy={false}>
          {view}
        </main>
        <aside class="sidebar" aria-label="Activity">
          <EventLog at={at} onHead={bumpHead} onPick={pick} />
        </aside>
      </div>
      <footer class="footer">
        CQRS / event-sourcing demo · every change is an event; the read model is rebuilt from them.
      </footer>
      {notice && (
        <div class="toast" role="status" id="toast">
          <span id="toast-message">{notice}</span>
          <button type="button" class="toast-close" aria-label="Dismiss" onClick={() => setNotice(null)}>
            ×
          </button>
        </div>
      )}
    </div>
  );
}
