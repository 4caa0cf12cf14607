// Numbers as people read them. Money stays a decimal string from the API until it is shown.

const integer = new Intl.NumberFormat("en-US");

export function int(n: number | null | undefined): string {
  return n === null || n === undefined ? "—" : integer.format(n);
}

export function money(amount: string | null | undefined, currency = ""): string {
  if (amount === null || amount === undefined) return "unlimited";
  const n = Number(amount);
  const digits = n !== 0 && Math.abs(n) < 0.01 ? 6 : 4;
  return `${n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits })}${currency ? ` ${currency}` : ""}`;
}

export function percent(x: number | null | undefined): string {
  return x === null || x === undefined || Number.isNaN(x) ? "—" : `${(x * 100).toFixed(1)}%`;
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 19)} UTC`;
}

export function ms(x: number | null | undefined): string {
  if (x === null || x === undefined) return "—";
  return x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(0)} ms`;
}
