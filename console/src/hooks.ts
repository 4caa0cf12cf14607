import { useCallback, useEffect, useRef, useState } from "react";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
  updated: Date | null;
}

/** GET-like loads: run ``load`` when ``key`` changes, and again every ``everyMs`` when given (live panels). */
export function useLoad<T>(load: () => Promise<T>, key: string, everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [updated, setUpdated] = useState<Date | null>(null);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  useEffect(() => {
    let live = true;
    loadRef.current()
      .then((d) => { if (live) { setData(d); setError(null); setUpdated(new Date()); } })
      .catch((e) => { if (live) setError(e instanceof Error ? e.message : String(e)); });
    return () => { live = false; };
  }, [key, tick]);

  useEffect(() => {
    if (!everyMs) return undefined;
    const id = window.setInterval(() => setTick((t) => t + 1), everyMs);
    return () => window.clearInterval(id);
  }, [everyMs]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, reload, updated };
}
