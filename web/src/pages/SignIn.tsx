import { useState } from "preact/hooks";
import { ApiError } from "../api/client";
import { Field } from "../components/Field";
import { PageTitle } from "../components/PageTitle";
import { auth, type Signed } from "../services/auth";

export type SignInReason = "ended" | "signed-out" | null;

interface SignInProps {
  reason: SignInReason;
  onSignedIn: (signed: Signed) => void;
}

function message(error: unknown): { title: string; detail: string } {
  if (!(error instanceof ApiError)) return { title: "Sign-in failed", detail: String(error) };
  if (error.status === 401) {
    return { title: "Wrong email or password", detail: "Check both and try again." };
  }
  if (error.status === 429) {
    // The server says whether this is a wait or a lockout, and for how long.
    const wait = error.retryAfterS;
    return {
      title: "Too many attempts",
      detail: error.problem.detail ?? (wait ? `Try again in ${wait} s.` : "Try again later."),
    };
  }
  return { title: error.title, detail: error.problem.detail ?? "" };
}

export function SignIn({ reason, onSignedIn }: SignInProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [fields, setFields] = useState<Record<string, string>>({});

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(null);
    setFields({});
    try {
      onSignedIn(await auth.signIn(String(form.get("email")), String(form.get("password"))));
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError && caught.status === 422) setFields(caught.fieldErrors());
    } finally {
      setBusy(false);
    }
  };

  const shown = error ? message(error) : null;
  return (
    <main id="main" class="sign-in" tabIndex={-1}>
      <p class="brand">Forecourt</p>
      <PageTitle>Sign in</PageTitle>
      {reason === "ended" && !shown && (
        <p class="notice notice-info" role="status">
          You were signed out because your session ended. Sign in again to carry on.
        </p>
      )}
      {reason === "signed-out" && !shown && (
        <p class="notice notice-info" role="status">
          You are signed out.
        </p>
      )}
      {shown && (
        <div class="notice notice-error" role="alert">
          <strong>{shown.title}</strong>
          {shown.detail && <p>{shown.detail}</p>}
        </div>
      )}
      <form onSubmit={submit} noValidate>
        <Field id="email" label="Email" error={fields.email}>
          {(aria) => (
            <input {...aria} name="email" type="email" autoComplete="username" required />
          )}
        </Field>
        <Field id="password" label="Password" error={fields.password}>
          {(aria) => (
            <input
              {...aria}
              name="password"
              type="password"
              autoComplete="current-password"
              required
            />
          )}
        </Field>
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      <details class="first-start">
        <summary>No account yet?</summary>
        <p>
          On a new installation, create the first user with the owner key that Forecourt printed
          at its first start (also in <code>data/owner-key</code>):
        </p>
        <pre class="mono">
          {`curl -X POST http://${location.host}/api/v1/users \\
  -H "Authorization: Bearer $(cat data/owner-key)" \\
  -H "Content-Type: application/json" \\
  -d '{"email": "you@example.com", "password": "at least 12 characters", "role": "owner"}'`}
        </pre>
      </details>
    </main>
  );
}
