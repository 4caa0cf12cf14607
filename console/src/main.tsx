import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { Route, Router, Switch } from "wouter";
import { get, onSessionLost, request, setCsrf, type SessionInfo } from "./api";
import { Layout } from "./components/Layout";
import { Generations } from "./pages/Generations";
import { KeyDetail } from "./pages/KeyDetail";
import { Keys } from "./pages/Keys";
import { Models } from "./pages/Models";
import { MyKey } from "./pages/MyKey";
import { NotAllowed, NotFound } from "./pages/NotAllowed";
import { Overview } from "./pages/Overview";
import { Playground } from "./pages/Playground";
import { SignIn } from "./pages/SignIn";
import { SessionContext } from "./session";
import "./styles.css";

function App() {
  const [session, setSession] = useState<SessionInfo | null | undefined>(undefined);

  const accept = useCallback((s: SessionInfo | null) => {
    setCsrf(s?.csrf_token ?? null);
    setSession(s);
  }, []);

  useEffect(() => {
    onSessionLost(() => accept(null));
    get<{ data: SessionInfo }>("/console/api/session")
      .then((r) => accept(r.data))
      .catch(() => accept(null)); // no session (401), or no answer: the sign-in page says what goes wrong next
  }, [accept]);

  const signOut = useCallback(async () => {
    try {
      await request("DELETE", "/console/api/session");
    } finally {
      accept(null);
    }
  }, [accept]);

  if (session === undefined) return <p className="loading">Loading…</p>;
  if (session === null) return <SignIn onSignedIn={accept} />;
  const admin = session.role === "admin";
  const adminOnly = (page: JSX.Element) => (admin ? page : <NotAllowed />);
  return (
    <SessionContext.Provider value={{ session, signOut }}>
      <Layout>
        <Switch>
          <Route path="/">{admin ? <Overview /> : <MyKey />}</Route>
          <Route path="/keys">{adminOnly(<Keys />)}</Route>
          <Route path="/keys/:id">{(params) => adminOnly(<KeyDetail id={Number(params.id)} />)}</Route>
          <Route path="/generations"><Generations /></Route>
          <Route path="/models"><Models /></Route>
          <Route path="/playground"><Playground /></Route>
          <Route><NotFound /></Route>
        </Switch>
      </Layout>
    </SessionContext.Provider>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Router base="/console">
      <App />
    </Router>
  </StrictMode>,
);
