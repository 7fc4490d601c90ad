import type { ComponentChildren } from "preact";
import { signedInAs, type Signed } from "../services/auth";
import type { RouteName } from "../router";

const NAV: ReadonlyArray<readonly [href: string, route: RouteName, label: string]> = [
  ["/overview", "overview", "Overview"],
  ["/settings/api-keys", "api-keys", "API keys"],
  ["/settings/webhooks", "webhooks", "Webhooks"],
  ["/events", "events", "Events"],
  ["/audit-log", "audit-log", "Audit log"],
];

interface ShellProps {
  route: RouteName;
  signed: Signed;
  onSignOut: () => void;
  children: ComponentChildren;
}

/** The frame of every signed-in page: skip link, navigation, who is signed in, sign-out. */
export function Shell({ route, signed, onSignOut, children }: ShellProps) {
  const who = signedInAs(signed);
  return (
    <div class="shell">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <span class="brand">Forecourt</span>
        <nav aria-label="Main">
          <ul class="nav">
            {NAV.map(([href, name, label]) => (
              <li key={href}>
                <a href={href} aria-current={route === name || (name === "webhooks" && route === "webhook") ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="account">
          <span class="who">{who}</span>
          <button type="button" class="secondary" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}
