import type { JSX } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { EVENTS, query, type LogEvent } from './api';
import { eventTitle, formatDateTime } from './format';

/**
 * A slider over event positions 0..head. Moving it renders the whole screen as of that position
 * (every query gets `atPosition`); moving it to the right end, or "Back to now", returns to live.
 */
export function TimeTravel({ head, at, onTravel }: { head: number; at: number | null; onTravel: (position: number | null) => void }): JSX.Element {
  const value = at ?? head;
  const [event, setEvent] = useState<LogEvent | null>(null);

  useEffect(() => {
    if (value <= 0) {
      setEvent(null);
      return;
    }
    let stale = false;
    query(EVENTS, { after: value - 1, first: 1 })
      .then((d) => {
        if (!stale) setEvent(d.events[0] ?? null);
      })
      .catch(() => {
        if (!stale) setEvent(null);
      });
    return () => {
      stale = true;
    };
  }, [value]);

  const when =
    value === 0 ? 'Before the first event' : event && event.position === value ? formatDateTime(event.recordedAt) : '…';
  const what = value > 0 && event && event.position === value ? eventTitle(event.type) : null;
  const live = at === null;

  return (
    <section class={live ? 'timetravel' : 'timetravel past'} aria-label="Time travel">
      <div class="tt-inner">
        <div class="tt-label">
          <label for="time-travel">Time travel</label>
          <span class={live ? 'tt-mode live' : 'tt-mode'} id="time-travel-mode">
            {live ? 'Now' : 'Past'}
          </span>
        </div>
        <input
          id="time-travel"
          type="range"
          min={0}
          max={Math.max(head, 1)}
          step={1}
          value={value}
          disabled={head === 0}
          aria-valuetext={`Position ${value} of ${head}${value === 0 ? ', before the first event' : ''}`}
          aria-describedby="time-travel-when"
          onInput={(e) => {
            const position = Number(e.currentTarget.value);
            onTravel(position >= head ? null : position);
          }}
        />
        <div class="tt-readout" id="time-travel-when" aria-live="polite">
          <span class="tt-position" id="time-travel-position">
            Position {value} of {head}
          </span>
          <span class="tt-time" id="time-travel-time">
            {when}
            {what && <span class="muted"> · {what}</span>}
          </span>
        </div>
        <button type="button" class="button button-small" id="back-to-now" onClick={() => onTravel(null)} disabled={live}>
          Back to now
        </button>
      </div>
      {!live && (
        <p class="tt-banner" id="time-travel-banner">
          Showing the company as it was at position {value}. Editing is off until you go back to now.
        </p>
      )}
    </section>
  );
}
