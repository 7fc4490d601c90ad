import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api } from "./api/client";
import type { Me } from "./api/types";
import { ProblemNotice } from "./components/ProblemNotice";
import { Shell } from "./components/Shell";
import { SignIn, type SignInReason } from "./pages/SignIn";
import { match, navigate, onLinkClick, type RouteName, useLocation } from "./router";
import { auth, type Signed } from "./services/auth";

type PageModule = { default: ComponentType<{ me: Me }> };

// Pages past the first screen are loaded when first opened.
const PAGES: Record<Exclude<RouteName, "sign-in">, () => Promise<PageModule>> = {
  overview: () => import("./pages/Overview"),
  "api-keys": () => import("./pages/ApiKeys"),
  webhooks: () => import("./pages/Webhooks"),
  webhook: () => import("./pages/WebhookDetail"),
  events: () => import("./pages/Events"),
  "audit-log": () => import("./pages/AuditLog"),
  "not-found": () => import("./pages/NotFound"),
};

type Session = { state: "checking" } | { state: "out"; reason: SignInReason } | ({ state: "in" } & Signed);

function safeNext(value: string | null): string {
  // Only a path of this app: never another origin ("//host", "https://...").
  return value && value.startsWith("/") && !value.startsWith("//") && match(value) !== "sign-in"
    ? value
    : "/overview";
}

export function App() {
  const url = useLocation();
  const route = match(url.pathname);
  const [session, setSession] = useState<Session>({ state: "checking" });
  const [startError, setStartError] = useState<unknown>(null);

  useEffect(() => {
    document.addEventListener("click", onLinkClick);
    const hadSession = api.hasSessionCookie();
    auth
      .current()
      .then((signed) =>
        setSession(signed ? { state: "in", ...signed } : { state: "out", reason: hadSession ? "ended" : null }),
      )
      .catch(setStartError);
    const off = api.onUnauthenticated(() => setSession({ state: "out", reason: "ended" }));
    return () => {
      off();
      document.removeEventListener("click", onLinkClick);
    };
  }, []);

  // Signed out: every page is the sign-in page, which comes back here after.
  useEffect(() => {
    if (session.state === "out" && route !== "sign-in") {
      const next = url.pathname === "/" ? "" : `?next=${encodeURIComponent(url.pathname + url.search)}`;
      navigate(`/sign-in${next}`, true);
    } else if (session.state === "in" && route === "sign-in") {
      navigate(safeNext(url.searchParams.get("next")), true);
    }
  }, [session.state, route]);

  if (startError) {
    return (
      <main id="main" class="sign-in">
        <h1>Forecourt</h1>
        <ProblemNotice error={startError} />
      </main>
    );
  }
  if (session.state === "checking") {
    return (
      <p class="loading boot" role="status">
        Loading…
      </p>
    );
  }
  if (session.state === "out") {
    return <SignIn reason={session.reason} onSignedIn={(signed) => setSession({ state: "in", ...signed })} />;
  }
  if (route === "sign-in") return null;

  const signOut = async () => {
    try {
      await auth.signOut();
    } finally {
      setSession({ state: "out", reason: "signed-out" });
    }
  };
  return (
    <Shell route={route} signed={session} onSignOut={signOut}>
      <LazyPage key={route} load={PAGES[route]} me={session.me} />
    </Shell>
  );
}

function LazyPage({ load, me }: { load: () => Promise<PageModule>; me: Me }) {
  const [page, setPage] = useState<PageModule | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let current = true;
    load()
      .then((module) => current && setPage(module))
      .catch((caught: unknown) => current && setError(caught));
    return () => {
      current = false;
    };
  }, [load]);
  if (error) {
    return (
      <div class="notice notice-error" role="alert">
        <strong>This page could not be loaded.</strong>
        <p>Forecourt may have been upgraded: reload the page.</p>
      </div>
    );
  }
  if (!page) {
    return (
      <p class="loading" role="status">
        Loading…
      </p>
    );
  }
  const Page = page.default;
  return <Page me={me} />;
}
