// A line diff (longest common subsequence) with a few lines of context, for
// "Show diff" in the history: rule sets are small, so O(n·m) is fine up to a bound.

const MAX_CELLS = 4_000_000;
const CONTEXT = 3;

/** [{op: ' ' | '+' | '-', text}] turning `a` into `b` (arrays of lines). */
export function diffLines(a, b) {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const x = a.slice(start, endA);
  const y = b.slice(start, endB);
  const head = a.slice(0, start).map((text) => ({ op: ' ', text }));
  const tail = a.slice(endA).map((text) => ({ op: ' ', text }));
  if ((x.length + 1) * (y.length + 1) > MAX_CELLS) {
    // Too large to align: everything old out, everything new in.
    return [...head, ...x.map((text) => ({ op: '-', text })),
      ...y.map((text) => ({ op: '+', text })), ...tail];
  }
  const w = y.length + 1;
  const len = new Uint32Array((x.length + 1) * w);
  for (let i = x.length - 1; i >= 0; i--) {
    for (let j = y.length - 1; j >= 0; j--) {
      len[i * w + j] = x[i] === y[j] ? len[(i + 1) * w + j + 1] + 1
        : Math.max(len[(i + 1) * w + j], len[i * w + j + 1]);
    }
  }
  const middle = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      middle.push({ op: ' ', text: x[i] }); i++; j++;
    } else if (i < x.length && (j === y.length || len[(i + 1) * w + j] >= len[i * w + j + 1])) {
      middle.push({ op: '-', text: x[i] }); i++;
    } else {
      middle.push({ op: '+', text: y[j] }); j++;
    }
  }
  return [...head, ...middle, ...tail];
}

/** Only the changed lines and CONTEXT lines around them. Each hunk opens with an
 * '@' line naming the resource it is in (the last `kind:` and `metadata.name` seen). */
export function hunks(ops) {
  const keep = new Array(ops.length).fill(false);
  ops.forEach((o, n) => {
    if (o.op === ' ') return;
    for (let k = Math.max(0, n - CONTEXT); k <= Math.min(ops.length - 1, n + CONTEXT); k++) keep[k] = true;
  });
  const label = labels(ops);
  const out = [];
  let open = false;
  ops.forEach((o, n) => {
    if (!keep[n]) { open = false; return; }
    if (!open && label[n]) out.push({ op: '@', text: label[n] });
    open = true;
    out.push(o);
  });
  return out;
}

/** Per line, the "Kind/name" of the YAML document ('---' separated) it belongs to. */
function labels(ops) {
  const label = new Array(ops.length).fill('');
  let start = 0;
  let kind = '';
  let name = '';
  const flush = (end) => label.fill(kind ? `${kind}/${name}` : '', start, end);
  ops.forEach((o, n) => {
    if (o.text === '---') {
      flush(n);
      [start, kind, name] = [n, '', ''];
    } else if (!kind && o.text.startsWith('kind: ')) {
      kind = o.text.slice(6);
    } else if (!name && o.text.startsWith('  name: ')) {
      name = o.text.slice(8);
    }
  });
  flush(ops.length);
  return label;
}
