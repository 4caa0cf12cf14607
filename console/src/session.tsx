// Who is signed in. The session itself is the HttpOnly cookie; this is what the page may know of it.
import { createContext, useContext } from "react";
import type { SessionInfo } from "./api";

export interface SessionState {
  session: SessionInfo;
  signOut: () => Promise<void>;
}

export const SessionContext = createContext<SessionState | null>(null);

export function useSession(): SessionState {
  const state = useContext(SessionContext);
  if (state === null) throw new Error("useSession outside a signed-in console");
  return state;
}

export const isAdmin = (s: SessionInfo) => s.role === "admin";
