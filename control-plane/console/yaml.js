// Resources as YAML text, the way an operator wrote them, for reading and diffing.

const PLAIN = /^[A-Za-z0-9_./@-][A-Za-z0-9_./@ :=+-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|~|[-+]?[0-9.]+(e[-+]?[0-9]+)?)$/i;

function scalar(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value !== 'string') return String(value);
  const plain = PLAIN.test(value) && !RESERVED.test(value) && !/: |\s$/.test(value);
  return plain ? value : JSON.stringify(value);
}

function lines(value, indent, out) {
  if (Array.isArray(value)) {
    if (!value.length) return false;
    for (const item of value) {
      if (item && typeof item === 'object' && !isEmpty(item)) {
        const sub = [];
        lines(item, '', sub);
        out.push(`${indent}- ${sub[0]}`);
        for (const line of sub.slice(1)) out.push(`${indent}  ${line}`);
      } else {
        out.push(`${indent}- ${inline(item)}`);
      }
    }
    return true;
  }
  if (value && typeof value === 'object') {
    if (isEmpty(value)) return false;
    for (const [key, item] of Object.entries(value)) {
      if (item && typeof item === 'object' && !isEmpty(item)) {
        out.push(`${indent}${scalar(key)}:`);
        lines(item, `${indent}  `, out);
      } else {
        out.push(`${indent}${scalar(key)}: ${inline(item)}`);
      }
    }
    return true;
  }
  out.push(indent + scalar(value));
  return true;
}

function isEmpty(value) {
  return Array.isArray(value) ? value.length === 0 : Object.keys(value).length === 0;
}

function inline(value) {
  if (Array.isArray(value) && !value.length) return '[]';
  if (value && typeof value === 'object' && isEmpty(value)) return '{}';
  return scalar(value);
}

/** One resource as YAML lines. */
export function toYaml(resource) {
  const out = [];
  lines(resource, '', out);
  return out.join('\n');
}

/** A resource's "Kind/name" (with ".namespace" outside default), for headings. */
export function resourceName(r) {
  const kind = r.kind || '?';
  const meta = r.metadata || {};
  const ns = meta.namespace && meta.namespace !== 'default' ? ` (${meta.namespace})` : '';
  return `${kind}/${meta.name || '?'}${ns}`;
}

/** Every resource, sorted by kind and name, as one multi-document YAML text. */
export function documents(resources) {
  return [...resources]
    .sort((a, b) => resourceName(a).localeCompare(resourceName(b)))
    .map((r) => `---\n${toYaml(r)}`)
    .join('\n');
}
