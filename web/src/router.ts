// The app's paths, routed in the browser with the History API. The server returns index.html
// for each of them (src/forecourt/dashboard/site.py).

import { useEffect, useState } from "preact/hooks";

export type RouteName = "overview" | "api-keys" | "webhooks" | "webhook" | "audit-log" | "events" | "sign-in" | "not-found";

export const ROUTES: Readonly<Record<string, RouteName>> = {
  "/": "overview",
  "/overview": "overview",
  "/settings/api-keys": "api-keys",
  "/settings/webhooks": "webhooks",
  "/events": "events",
  "/audit-log": "audit-log",
  "/sign-in": "sign-in",
};

// Paths with one identifier in them: "/settings/webhooks/ep_1" is the page of endpoint ep_1.
const WITH_ID: ReadonlyArray<readonly [prefix: string, route: RouteName]> = [
  ["/settings/webhooks/", "webhook"],
];

export function match(pathname: string): RouteName {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  const exact = ROUTES[path];
  if (exact) return exact;
  for (const [prefix, route] of WITH_ID) {
    const rest = path.startsWith(prefix) ? path.slice(prefix.length) : "";
    if (rest && !rest.includes("/")) return route;
  }
  return "not-found";
}

/** The identifier in a path of `WITH_ID` ("ep_1" in "/settings/webhooks/ep_1"). */
export function pathId(pathname: string): string {
  const path = pathname.replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}

const NAVIGATED = "forecourt:navigated";

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  window.dispatchEvent(new Event(NAVIGATED));
}

/** The current location; re-renders on navigation and on back/forward. */
export function useLocation(): URL {
  const [url, setUrl] = useState(() => new URL(location.href));
  useEffect(() => {
    const update = () => setUrl(new URL(location.href));
    window.addEventListener("popstate", update);
    window.addEventListener(NAVIGATED, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(NAVIGATED, update);
    };
  }, []);
  return url;
}

/** Follows a same-origin link click in the app instead of loading the page again. */
export function onLinkClick(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = (event.target as Element | null)?.closest?.("a");
  if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
  const url = new URL(anchor.href, location.href);
  if (url.origin !== location.origin || match(url.pathname) === "not-found") return;
  // A link within the page (the skip link) keeps its native behaviour.
  if (url.hash && url.pathname === location.pathname) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
}
