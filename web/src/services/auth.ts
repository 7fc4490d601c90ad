// Sign-in sessions: /api/v1/auth. The session lives in an HttpOnly cookie; its CSRF token in
// a readable cookie the API client sends back on writes.

import { api, type ApiClient } from "../api/client";
import type { Me, SessionOut, User } from "../api/types";

/** The API key a session acts as (signed in with it): never its secret. */
export interface SessionKey {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
}

/** GET /api/v1/auth/me: for an API key (a bearer key or a session signed in with one), the key. */
export interface KeyMe extends Me {
  via_cookie?: boolean;
  key?: SessionKey;
}

export interface KeySessionOut {
  key: SessionKey;
  csrf_token: string;
  expires_at: string;
}

export interface Signed {
  me: KeyMe;
  user: User | null;
  /** The key the session was signed in with; null for a user's session. */
  key: SessionKey | null;
}

/** Who the header names: the user's email, or the key's name. */
export function signedInAs(signed: Signed): string {
  if (signed.user) return signed.user.email;
  if (signed.key) return `${signed.key.name} (API key)`;
  return signed.me.actor_type === "key" ? "API key" : "Signed in";
}

export function authService(client: ApiClient = api) {
  return {
    /** Who the session belongs to; null when there is no valid session. */
    async current(): Promise<Signed | null> {
      try {
        const me = await client.request<KeyMe>("GET", "/api/v1/auth/me", {
          quietUnauthenticated: true,
        });
        return { me, user: await this.user(me), key: me.key ?? null };
      } catch (error) {
        if ((error as { status?: number }).status === 401) return null;
        throw error;
      }
    },

    async user(me: Me): Promise<User | null> {
      if (me.actor_type !== "user" || !me.actor_id || !me.scopes.includes("users:read")) {
        return null;
      }
      return client.request<User>("GET", `/api/v1/users/${encodeURIComponent(me.actor_id)}`);
    },

    async signIn(email: string, password: string): Promise<Signed> {
      const session = await client.request<SessionOut>("POST", "/api/v1/auth/login", {
        body: { email, password },
        quietUnauthenticated: true,
      });
      const me = await client.request<KeyMe>("GET", "/api/v1/auth/me");
      return { me, user: session.user, key: null };
    },

    /** Sign in with an API key (the owner key printed at first start, or any key): the
     * session acts as the key, no more. The key is sent once and kept nowhere. */
    async signInWithKey(key: string): Promise<Signed> {
      const session = await client.request<KeySessionOut>("POST", "/api/v1/auth/key", {
        body: { key },
        quietUnauthenticated: true,
      });
      const me = await client.request<KeyMe>("GET", "/api/v1/auth/me");
      return { me, user: null, key: me.key ?? session.key };
    },

    async signOut(): Promise<void> {
      await client.request<void>("POST", "/api/v1/auth/logout", { quietUnauthenticated: true });
    },
  };
}

export const auth = authService();
