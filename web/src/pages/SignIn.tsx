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

type Method = "password" | "key";

function message(error: unknown, method: Method): { title: string; detail: string } {
  if (!(error instanceof ApiError)) return { title: "Sign-in failed", detail: String(error) };
  if (error.status === 401 && method === "key") {
    return {
      title: "This key cannot sign in",
      detail: "It is unknown, revoked or expired, or its tenant is suspended. Check the key and try again.",
    };
  }
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
  const [method, setMethod] = useState<Method>("password");

  const attempt = async (chosen: Method, signIn: () => Promise<Signed>) => {
    setBusy(true);
    setError(null);
    setFields({});
    setMethod(chosen);
    try {
      onSignedIn(await signIn());
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError && caught.status === 422) setFields(caught.fieldErrors());
    } finally {
      setBusy(false);
    }
  };

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    await attempt("password", () =>
      auth.signIn(String(form.get("email")), String(form.get("password"))),
    );
  };

  const submitKey = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const key = String(new FormData(form).get("key")).trim();
    // The key leaves the page with this request: the field is emptied whatever the answer.
    form.reset();
    await attempt("key", () => auth.signInWithKey(key));
  };

  const shown = error ? message(error, method) : null;
  // A refused key is the key field's error (announced, and linked to the field).
  const keyError =
    method === "key" && shown ? [shown.title, shown.detail].filter(Boolean).join(". ") : fields.key;
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
      {shown && method === "password" && (
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
          {busy && method === "password" ? "Signing in…" : "Sign in"}
        </button>
      </form>
      <details class="key-sign-in">
        <summary>Sign in with an API key</summary>
        <p id="key-hint">
          Use the owner key Forecourt printed at its first start (also in{" "}
          <code>data/owner-key</code>), or any other key. Signed in with a key, you can do what
          the key can, no more.
        </p>
        <form onSubmit={submitKey} noValidate>
          <Field id="key" label="API key" error={keyError}>
            {(aria) => (
              <input
                {...aria}
                name="key"
                type="password"
                autoComplete="off"
                spellcheck={false}
                required
              />
            )}
          </Field>
          <button type="submit" disabled={busy}>
            {busy && method === "key" ? "Signing in…" : "Sign in with the key"}
          </button>
        </form>
      </details>
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
