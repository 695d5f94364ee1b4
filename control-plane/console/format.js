// Small formatting helpers shared by the views.

/** `orders`, or `orders.staging` outside the default namespace. */
export function serviceName(service, namespace) {
  return namespace && namespace !== 'default' ? `${service}.${namespace}` : service;
}

/** At most one decimal, none when it adds nothing: 12, 3.4, 0.2. */
export function num(n) {
  if (!Number.isFinite(n)) return '0';
  if (Math.abs(n) >= 100) return String(Math.round(n));
  return String(Math.round(n * 10) / 10);
}

export function time(ms) {
  if (!ms) return '';
  const d = new Date(Number(ms));
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - Number(ms)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A stable colour class for a lane, by its position among the lanes. */
export function laneClass(index) {
  return `lane-${index % 8}`;
}
