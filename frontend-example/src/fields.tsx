// Form building blocks: every input has a <label for>, and its error is rendered right below it,
// tied to the input with aria-describedby / aria-invalid.
import type { ComponentChildren, JSX } from 'preact';
import { useState } from 'preact/hooks';
import { NO_ERRORS, type FormErrors, type Outcome } from './api';
import { Card, ReadOnlyNote } from './ui';

const errorId = (id: string): string => `${id}-error`;

interface FieldProps {
  form: string;
  name: string;
  label: string;
  value: string;
  error?: string;
  hint?: string;
  /** Spans two columns of the form grid. */
  wide?: boolean;
  onValue: (value: string) => void;
}

function FieldShell({ id, label, error, hint, wide, children }: { id: string; label: string; error?: string; hint?: string; wide?: boolean; children: ComponentChildren }): JSX.Element {
  const cls = ['field', error ? 'has-error' : '', wide ? 'wide' : ''].filter(Boolean).join(' ');
  return (
    <div class={cls}>
      <label for={id}>{label}</label>
      {children}
      {hint && !error && (
        <p class="field-hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error && (
        <p class="field-error" id={errorId(id)}>
          {error}
        </p>
      )}
    </div>
  );
}

export function TextField(
  props: FieldProps & { type?: 'text' | 'date'; autoComplete?: string; placeholder?: string; inputMode?: 'numeric' | 'text' },
): JSX.Element {
  const id = `${props.form}-${props.name}`;
  const describedBy = props.error ? errorId(id) : props.hint ? `${id}-hint` : undefined;
  return (
    <FieldShell id={id} label={props.label} error={props.error} hint={props.hint} wide={props.wide}>
      <input
        id={id}
        name={props.name}
        // Preact's typings tie each input type to a role; both of ours behave like text here.
        type={(props.type ?? 'text') as 'text'}
        value={props.value}
        placeholder={props.placeholder}
        autoComplete={props.autoComplete ?? 'off'}
        inputMode={props.inputMode}
        aria-invalid={props.error ? 'true' : undefined}
        aria-describedby={describedBy}
        onInput={(e) => props.onValue(e.currentTarget.value)}
      />
    </FieldShell>
  );
}

export function SelectField(props: FieldProps & { options: { value: string; label: string }[] }): JSX.Element {
  const id = `${props.form}-${props.name}`;
  return (
    <FieldShell id={id} label={props.label} error={props.error} hint={props.hint} wide={props.wide}>
      <select
        id={id}
        name={props.name}
        value={props.value}
        aria-invalid={props.error ? 'true' : undefined}
        aria-describedby={props.error ? errorId(id) : props.hint ? `${id}-hint` : undefined}
        onChange={(e) => props.onValue(e.currentTarget.value)}
      >
        {props.options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
    </FieldShell>
  );
}

/** The form-level outcome: an error that belongs to no field, or a success message. */
export function FormStatus({ form, error, success }: { form: string; error: string | null; success: string | null }): JSX.Element | null {
  if (error) {
    return (
      <p class="form-error" id={`${form}-error`} role="alert">
        {error}
      </p>
    );
  }
  if (success) {
    return (
      <p class="form-success" id={`${form}-success`} role="status">
        {success}
      </p>
    );
  }
  return null;
}

/** What a form card shows of its form's state (see `useForm`). */
interface FormState {
  busy: boolean;
  errors: FormErrors;
  success: string | null;
}

/**
 * The scaffolding every form of the SPA shares: a card holding a form whose fieldset is disabled
 * while the screen shows the past or while the mutation runs, the form-level error or success,
 * the submit button (when `submit` is given) and the read-only note in the past. `id` names the
 * form; the ids of its fields, error and success lines derive from it.
 */
export function FormCard(props: {
  id: string;
  cardId: string;
  title: string;
  legend: string;
  at: number | null;
  form: FormState;
  onSubmit: () => void;
  /** The submit button's label, and the one while the mutation runs. */
  submit?: { label: string; busy: string };
  /** Lays the fields out on the two-column grid. */
  grid?: boolean;
  cardClass?: string;
  children: ComponentChildren;
}): JSX.Element {
  const { id, form } = props;
  const status = <FormStatus form={id} error={form.errors.form} success={props.submit ? form.success : null} />;
  return (
    <Card title={props.title} id={props.cardId} class={props.cardClass}>
      <form
        id={id}
        class={props.grid ? 'form-grid' : undefined}
        onSubmit={(e) => {
          e.preventDefault();
          props.onSubmit();
        }}
        noValidate
      >
        <fieldset disabled={props.at !== null || form.busy}>
          <legend class="visually-hidden">{props.legend}</legend>
          {props.children}
          {props.submit ? (
            <div class="form-actions">
              {status}
              <button type="submit" class="button button-primary">
                {form.busy ? props.submit.busy : props.submit.label}
              </button>
            </div>
          ) : (
            status
          )}
        </fieldset>
        <ReadOnlyNote at={props.at} />
      </form>
    </Card>
  );
}

/** An optional integer input ("" → undefined); anything else is reported beside the field. */
export function optionalId(raw: string): number | undefined | 'invalid' {
  const text = raw.trim();
  if (text === '') return undefined;
  return /^\d{1,10}$/.test(text) ? Number(text) : 'invalid';
}

function newKey(): string {
  return typeof crypto !== 'undefined' && 'randomUUID' in crypto
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The state of one form: its values, errors, busy flag and success message. `submit` runs a
 * mutation with an idempotency key that is kept only when the request never got an answer, so
 * pressing the button again after a network failure cannot apply the command twice.
 */
export function useForm<V extends Record<string, string>>(initial: V) {
  const [values, setValues] = useState<V>(initial);
  const [errors, setErrors] = useState<FormErrors>(NO_ERRORS);
  const [busy, setBusy] = useState(false);
  const [success, setSuccess] = useState<string | null>(null);
  const [key, setKey] = useState(newKey);

  const set = (name: keyof V & string) => (value: string) => {
    setValues((v) => ({ ...v, [name]: value }));
    setKey(newKey());
    setSuccess(null);
    setErrors((e) => {
      if (!(name in e.fields)) return e;
      const fields = { ...e.fields };
      delete fields[name];
      return { ...e, fields };
    });
  };

  async function submit<P>(
    run: (idempotencyKey: string) => Promise<Outcome<P>>,
    onSuccess: (payload: P) => { message: string; reset?: boolean },
  ): Promise<void> {
    setBusy(true);
    setSuccess(null);
    try {
      const outcome = await run(key);
      if (outcome.ok) {
        const { message, reset } = onSuccess(outcome.payload);
        setErrors(NO_ERRORS);
        setSuccess(message);
        if (reset ?? true) setValues(initial);
      } else {
        setErrors(outcome.errors);
      }
      if (outcome.ok || !outcome.network) setKey(newKey());
    } finally {
      setBusy(false);
    }
  }

  return { values, setValues, set, errors, setErrors, busy, success, setSuccess, submit };
}
