import type { ComponentChildren, JSX } from 'preact';

/** The page's heading (the app focuses it after a navigation, for screen readers). */
export function PageTitle({ children, eyebrow }: { children: ComponentChildren; eyebrow?: ComponentChildren }): JSX.Element {
  return (
    <div class="page-title">
      {eyebrow && <div class="eyebrow">{eyebrow}</div>}
      <h1 id="page-title" tabIndex={-1}>
        {children}
      </h1>
    </div>
  );
}

export function Loading({ label }: { label: string }): JSX.Element {
  return (
    <div class="loading" role="status" aria-live="polite" aria-busy="true">
      <span class="spinner" aria-hidden="true" />
      {label}
    </div>
  );
}

export function Skeleton({ rows = 3 }: { rows?: number }): JSX.Element {
  return (
    <div class="skeleton" aria-hidden="true">
      {Array.from({ length: rows }, (_, i) => (
        <div key={i} class="skeleton-row" />
      ))}
    </div>
  );
}

export function Empty({ title, children, id }: { title: string; children?: ComponentChildren; id?: string }): JSX.Element {
  return (
    <div class="empty" id={id}>
      <svg class="empty-icon" viewBox="0 0 24 24" aria-hidden="true">
        <path d="M4 10h16v9a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1zM3 6l2-3h14l2 3v2a2 2 0 0 1-4 0 2 2 0 0 1-4 0 2 2 0 0 1-4 0 2 2 0 0 1-4 0z" />
      </svg>
      <p class="empty-title">{title}</p>
      {children && <div class="empty-body">{children}</div>}
    </div>
  );
}

export function ErrorBanner({ children }: { children: ComponentChildren }): JSX.Element {
  return (
    <p class="banner banner-error" role="alert">
      {children}
    </p>
  );
}

export function Card({ title, children, id, class: cls }: { title?: string; children: ComponentChildren; id?: string; class?: string }): JSX.Element {
  const headingId = id ? `${id}-heading` : undefined;
  return (
    <section class={cls ? `card ${cls}` : 'card'} id={id} aria-labelledby={title ? headingId : undefined}>
      {title && (
        <h2 class="card-title" id={headingId}>
          {title}
        </h2>
      )}
      {children}
    </section>
  );
}

export function ReadOnlyNote({ at }: { at: number | null }): JSX.Element | null {
  if (at === null) return null;
  return <p class="readonly-note">Read-only while you look at the past (position {at}).</p>;
}
