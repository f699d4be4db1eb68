import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { EVENTS, EVENT_FEED, STATUS, keepSubscribed, query, type LogEvent } from './api';
import { eventSummary, eventTitle, formatTime } from './format';

const LIMIT = 50;

/**
 * The newest events first, fed by the `events` subscription. It starts from the last LIMIT
 * stored events and subscribes after the last one it has, so nothing is missed or doubled; when
 * the subscription ends it resubscribes after the last position it saw.
 */
export function EventLog({ at, onHead, onPick }: { at: number | null; onHead: (position: number) => void; onPick: (position: number) => void }): JSX.Element {
  const [events, setEvents] = useState<LogEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const onHeadRef = useRef(onHead);
  onHeadRef.current = onHead;

  useEffect(() => {
    let last: number | null = null;
    let stop: (() => void) | null = null;
    let cancelled = false;

    const start = async (): Promise<void> => {
      try {
        const { projectionStatus } = await query(STATUS, {});
        const from = Math.max(0, projectionStatus.headPosition - LIMIT);
        const recent = await query(EVENTS, { after: from, first: LIMIT });
        last = recent.events.at(-1)?.position ?? from;
        if (cancelled) return;
        setEvents([...recent.events].reverse());
        onHeadRef.current(last);
      } catch (e) {
        setError(e instanceof Error ? e.message : String(e));
        setEvents([]);
      }
      if (cancelled) return;
      stop = keepSubscribed(
        EVENT_FEED,
        () => ({ after: last }),
        ({ events: event }) => {
          if (last !== null && event.position <= last) return; // a replay after a reconnect
          last = event.position;
          setError(null);
          onHeadRef.current(event.position);
          setEvents((list) => [event, ...forgetting(list ?? [], event)].slice(0, LIMIT));
        },
      );
    };
    void start();
    return () => {
      cancelled = true;
      stop?.();
    };
  }, []);

  return (
    <section class="card event-log" aria-labelledby="event-log-heading">
      <div class="card-head">
        <h2 class="card-title" id="event-log-heading">
          Event log
        </h2>
        <span class="muted small">newest first</span>
      </div>
      {error && <p class="banner banner-error">{error}</p>}
      {events === null ? (
        <p class="muted">Loading events…</p>
      ) : events.length === 0 ? (
        <p class="muted" id="event-log-empty">
          No events yet. Everything you do appears here as it is committed.
        </p>
      ) : (
        <ol class="event-list" id="event-log" aria-live="off">
          {events.map((e) => (
            <li key={e.position} class={at !== null && e.position > at ? 'future' : at === e.position ? 'current' : undefined}>
              <button type="button" class="event" onClick={() => onPick(e.position)} title={`Travel to position ${e.position}`}>
                <span class="event-pos">#{e.position}</span>
                <span class="event-body">
                  <span class="event-type">{eventTitle(e.type)}</span>
                  <span class="event-summary">{eventSummary(e)}</span>
                </span>
                <time class="event-time" dateTime={e.recordedAt}>
                  {formatTime(e.recordedAt)}
                </time>
              </button>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

const PERSONAL_FIELDS = ['first_name', 'last_name', 'date_of_birth'];

/** The events already shown, without the personal data an erasure event erases from its stream
 * (the server erases it from everything it stores; these were received before). */
function forgetting(list: LogEvent[], event: LogEvent): LogEvent[] {
  if (event.type !== 'EmployeePersonalDataErased') return list;
  return list.map((e) =>
    e.streamId === event.streamId && PERSONAL_FIELDS.some((f) => e.data[f] != null)
      ? { ...e, data: { ...e.data, ...Object.fromEntries(PERSONAL_FIELDS.map((f) => [f, null])) } }
      : e,
  );
}
