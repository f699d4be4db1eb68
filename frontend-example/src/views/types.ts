export interface ViewProps {
  /** The time-travel position, or null for now (live). */
  at: number | null;
  /** Bumped on every live change: re-query. */
  refresh: number;
  /** A mutation of ours committed at `position`: re-query now. */
  onWrite: (position: number) => void;
  /** A short message for the toast. */
  notify: (message: string) => void;
}
