// Building and updating the page without HTML strings: every value, from a rule or a
// sidecar, becomes a text node, so `<img onerror=…>` in a label shows as characters.

/** el('td', {class: 'x', onclick: fn}, 'text', child, [more]) — attributes are set
 * with setAttribute (never `style`: the CSP forbids inline styles), `on*` functions
 * become listeners, children are nodes or text. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      listen(node, name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Handlers live on the node, behind one listener per event type, so `morph` can swap
// in the new render's handlers while keeping the node (and a browser's focus on it).
function dispatch(event) {
  const handler = event.currentTarget.__on && event.currentTarget.__on[event.type];
  if (handler) handler(event);
}

function listen(node, type, handler) {
  node.__on = node.__on || {};
  if (!node.__types) node.__types = new Set();
  node.__on[type] = handler;
  if (!node.__types.has(type)) {
    node.__types.add(type);
    node.addEventListener(type, dispatch);
  }
}

/** Makes `old` look like `next`, reusing `old`'s nodes where tag (and `data-key`, when
 * given) match: a poll every 2 s then changes only the text that changed, and a
 * button someone is about to click stays the same element. */
export function morph(old, next) {
  if (old.nodeType !== next.nodeType || old.nodeName !== next.nodeName ||
      (old.nodeType === 1 && old.getAttribute('data-key') !== next.getAttribute('data-key'))) {
    old.replaceWith(next);
    return;
  }
  if (old.nodeType !== 1) {
    if (old.data !== next.data) old.data = next.data;
    return;
  }
  for (const { name } of [...old.attributes]) {
    if (!next.hasAttribute(name)) old.removeAttribute(name);
  }
  for (const { name, value } of [...next.attributes]) {
    if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  }
  old.__on = {};
  for (const [type, handler] of Object.entries(next.__on || {})) listen(old, type, handler);
  morphChildren(old, next);
}

function morphChildren(old, next) {
  const keyed = new Map();
  for (const child of old.childNodes) {
    const key = child.nodeType === 1 && child.getAttribute('data-key');
    if (key) keyed.set(key, child);
  }
  const wanted = [...next.childNodes];
  let cursor = old.firstChild;
  for (const child of wanted) {
    const key = child.nodeType === 1 && child.getAttribute('data-key');
    let match = key ? keyed.get(key) : cursor;
    if (key && match) keyed.delete(key);
    if (!match || (!key && match.nodeType === 1 && match.getAttribute('data-key'))) {
      old.insertBefore(child, cursor);
      continue;
    }
    if (match !== cursor) old.insertBefore(match, cursor);
    cursor = match.nextSibling;
    morph(match, child);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}
