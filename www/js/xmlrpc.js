// XML-RPC from the browser: POST / with a methodCall, same origin (ctd's Origin and Host checks apply), the answer
// read with DOMParser. Strings are escaped by the XML serializer, never concatenated as markup.
export class Fault extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

function encodeValue(doc, v) {
  const value = doc.createElement('value');
  let el;
  if (Array.isArray(v)) {
    el = doc.createElement('array');
    const data = doc.createElement('data');
    for (const x of v) data.appendChild(encodeValue(doc, x));
    el.appendChild(data);
  } else if (typeof v === 'boolean') {
    el = doc.createElement('boolean'); el.textContent = v ? '1' : '0';
  } else if (typeof v === 'number') {
    el = doc.createElement(Number.isInteger(v) ? 'int' : 'double'); el.textContent = String(v);
  } else if (v !== null && typeof v === 'object') {
    el = doc.createElement('struct');
    for (const [k, x] of Object.entries(v)) {
      const m = doc.createElement('member');
      const n = doc.createElement('name'); n.textContent = k;
      m.appendChild(n); m.appendChild(encodeValue(doc, x)); el.appendChild(m);
    }
  } else {
    el = doc.createElement('string'); el.textContent = String(v ?? '');
  }
  value.appendChild(el);
  return value;
}

export function encodeCall(method, params) {
  const doc = document.implementation.createDocument(null, 'methodCall', null);
  const root = doc.documentElement;
  const name = doc.createElement('methodName'); name.textContent = method; root.appendChild(name);
  const ps = doc.createElement('params');
  for (const p of params) { const e = doc.createElement('param'); e.appendChild(encodeValue(doc, p)); ps.appendChild(e); }
  root.appendChild(ps);
  return '<?xml version="1.0"?>' + new XMLSerializer().serializeToString(doc);
}

function child(el) { for (const c of el.children) return c; return null; }

function decodeValue(value) {
  const t = child(value);
  if (!t) return value.textContent;
  switch (t.tagName) {
    case 'string': return t.textContent;
    case 'int': case 'i4': case 'i8': return parseInt(t.textContent, 10);
    case 'double': return parseFloat(t.textContent);
    case 'boolean': return t.textContent.trim() === '1';
    case 'nil': return null;
    case 'dateTime.iso8601': return t.textContent;
    case 'base64': return t.textContent;
    case 'array': { const d = child(t); return d ? [...d.children].map(decodeValue) : []; }
    case 'struct': {
      const o = {};
      for (const m of t.children) {
        const n = m.getElementsByTagName('name')[0], v = m.getElementsByTagName('value')[0];
        o[n.textContent] = decodeValue(v);
      }
      return o;
    }
    default: return t.textContent;
  }
}

export async function call(method, ...params) {
  const r = await fetch('/', {
    method: 'POST', headers: { 'Content-Type': 'text/xml' }, body: encodeCall(method, params),
    credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer',
  });
  if (!r.ok) throw new Fault(-r.status, (await r.text()).trim());
  const doc = new DOMParser().parseFromString(await r.text(), 'application/xml');
  const fault = doc.getElementsByTagName('fault')[0];
  if (fault) {
    const f = decodeValue(fault.getElementsByTagName('value')[0]);
    throw new Fault(f.faultCode, f.faultString);
  }
  const v = doc.querySelector('params > param > value');
  if (!v) throw new Fault(-32700, 'malformed answer');
  return decodeValue(v);
}
