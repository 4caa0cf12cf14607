// The console talks only to the JSON API (/admin/*, /v1/*, /console/api/session). The session cookie is
// HttpOnly: scripts never see it. The CSRF token lives in this module's memory only (never in storage) and goes
// on every change.

export type Role = "admin" | "key";

export interface SessionInfo {
  role: Role;
  name: string;
  label: string;
  key_id: number | null;
  csrf_token: string;
}

export interface KeyRecord {
  id: number;
  name: string;
  label: string;
  status: "active" | "revoked" | "expired";
  credit: string | null;
  spent: string;
  reserved: string;
  credit_left: string | null;
  rpm: number | null;
  tpm: number | null;
  models: string[] | null;
  expires_at: string | null;
  revoked_at: string | null;
  created_at: string;
}

export interface UsageRow {
  day: string;
  model: string;
  requests: number;
  errors: number;
  cancelled: number;
  prompt_tokens: number;
  cached_tokens: number;
  completion_tokens: number;
  reasoning_tokens: number;
  cost: string;
  currency: string;
}

export interface DailyUsage {
  since: string;
  days: string[];
  data: UsageRow[];
}

export interface KeyUsage {
  key_id: number | null;
  key_label: string;
  key_name: string;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost: string;
  currency: string;
}

export interface Generation {
  id: string;
  created_at: string;
  model: string;
  status: "completed" | "cancelled" | "error";
  streamed: boolean;
  key_id: number | null;
  key_label: string;
  key_name: string;
  prompt_tokens: number;
  cached_tokens: number;
  completion_tokens: number;
  reasoning_tokens: number;
  cost: string;
  currency: string;
  ttft_ms: number | null;
  duration_ms: number;
}

export interface GenerationPage {
  data: Generation[];
  total: number;
  limit: number;
  offset: number;
}

export interface EngineStatus {
  status: "ok" | "error";
  model: string;
  detail?: string;
  demo?: boolean;
  dtype?: string | null;
  max_model_len?: number;
  running?: number;
  waiting?: number;
  kv_cache_usage?: number;
  prefix_cache_hit_rate?: number;
  num_preemptions?: number;
  tokens_per_second?: number | null;
}

export interface ModelCard {
  id: string;
  name: string;
  description: string;
  context_length: number | null;
  pricing: { prompt_per_1k: string; completion_per_1k: string; currency: string; input_cache_read?: string };
  top_provider?: { max_completion_tokens: number | null };
  supported_parameters: string[];
  hosting?: "local" | "upstream";
  quantization?: string | null;
}

export interface MyKey {
  label: string;
  name: string;
  limit: string | null;
  usage: string | null;
  reserved?: string;
  limit_remaining: string | null;
  rate_limit: { requests_per_minute: number | null; tokens_per_minute: number | null };
  models: string[] | null;
  expires_at: string | null;
  status?: string;
  usage_last_24h: { requests: number; prompt_tokens: number; completion_tokens: number; cost: string };
}

export class ApiError extends Error {
  constructor(public status: number, message: string, public code: string | null = null,
              public param: string | null = null) {
    super(message);
  }
}

let csrfToken: string | null = null;
let onSignedOut: () => void = () => {};

export function setCsrf(token: string | null): void {
  csrfToken = token;
}

/** Called when the server says the session is gone (401): the app goes back to the sign-in page. */
export function onSessionLost(callback: () => void): void {
  onSignedOut = callback;
}

export function csrfHeaders(): Record<string, string> {
  return csrfToken ? { "X-CSRF-Token": csrfToken } : {};
}

export async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let code: string | null = null;
  let param: string | null = null;
  try {
    const body = await response.json();
    if (body?.error?.message) {
      ({ message, code = null, param = null } = body.error);
    }
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message, code, param);
}

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, csrfHeaders());
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !path.startsWith("/console/api/session")) onSignedOut();
    throw error;
  }
  return (await response.json()) as T;
}

export const get = <T>(path: string) => request<T>("GET", path);

export function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
