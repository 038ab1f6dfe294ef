import { useId, useState, type FormEvent } from 'react';

/**
 * Shown when the gateway closed with 4401: it has authentication on, and the page has
 * no token, or its token was refused or expired. The gateway's reason is shown as is
 * (`Unauthorized: expired 12 s ago (sub 'alice')`).
 */
export function TokenPrompt({ reason, hadToken, onToken }: { reason: string; hadToken: boolean; onToken: (token: string) => void }) {
  const [value, setValue] = useState('');
  const inputId = useId();
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const token = value.trim();
    if (!token) return;
    setValue('');
    onToken(token);
  };
  return (
    <section className="panel token-prompt" aria-labelledby={`${inputId}-title`}>
      <h2 id={`${inputId}-title`}>{hadToken ? 'The token was refused' : 'This gateway needs a token'}</h2>
      {reason && <p className="muted small">{reason}</p>}
      <form onSubmit={submit}>
        <label htmlFor={inputId}>Token</label>
        <input
          id={inputId}
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(event) => setValue(event.target.value)}
          placeholder="eyJ…"
        />
        <button type="submit" disabled={!value.trim()}>
          Connect
        </button>
      </form>
      <p className="hint small">
        For development: <code>realtime token --sub you</code> prints one, and{' '}
        <code>{`${location.origin}${location.pathname}#token=…`}</code> opens this page with it.
      </p>
    </section>
  );
}
