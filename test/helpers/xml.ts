// A strict little XML reader for the XML qnet prints (libvirt <interface>/<hostdev> snippets):
// elements, attributes (quoted, with the five predefined entities), comments, whitespace.
// Anything else (text content, a bare & or <, a mismatched or unclosed tag, '--' in a
// comment) is an error, so a test that parses the output also proves it well-formed.

export interface XmlElement {
  kind: 'element';
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
}
export interface XmlComment { kind: 'comment'; text: string }
export type XmlNode = XmlElement | XmlComment;

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', apos: "'", quot: '"' };

function unescape(s: string, where: number): string {
  if (/[<]/.test(s)) throw new Error(`XML: '<' in an attribute value at ${where}`);
  return s.replace(/&([a-z]+);|&/g, (m, name: string | undefined) => {
    if (name && name in ENTITIES) return ENTITIES[name];
    throw new Error(`XML: bad entity '${m}' at ${where}`);
  });
}

/** Parse a sequence of top-level nodes (a fragment: several roots are fine). */
export function parseXmlFragment(text: string): XmlNode[] {
  let i = 0;
  const stack: XmlElement[] = [{ kind: 'element', name: '#fragment', attrs: {}, children: [] }];
  const top = () => stack[stack.length - 1];
  while (i < text.length) {
    if (/\s/.test(text[i])) { i++; continue; }
    if (text[i] !== '<') throw new Error(`XML: text content at ${i}: ${JSON.stringify(text.slice(i, i + 30))}`);
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end < 0) throw new Error(`XML: unclosed comment at ${i}`);
      const body = text.slice(i + 4, end);
      if (body.includes('--') || body.endsWith('-')) throw new Error(`XML: '--' inside a comment at ${i}`);
      top().children.push({ kind: 'comment', text: body.trim() });
      i = end + 3;
      continue;
    }
    if (text[i + 1] === '/') {
      const m = /^<\/([A-Za-z_][\w:.-]*)\s*>/.exec(text.slice(i));
      if (!m) throw new Error(`XML: bad end tag at ${i}`);
      const open = stack.pop()!;
      if (stack.length === 0 || open.name !== m[1]) throw new Error(`XML: </${m[1]}> closes <${open.name}> at ${i}`);
      i += m[0].length;
      continue;
    }
    const m = /^<([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*\s*=\s*(?:'[^']*'|"[^"]*"))*)\s*(\/?)>/.exec(text.slice(i));
    if (!m) throw new Error(`XML: bad start tag at ${i}: ${JSON.stringify(text.slice(i, i + 40))}`);
    const attrs: Record<string, string> = {};
    for (const a of m[2].matchAll(/([A-Za-z_][\w:.-]*)\s*=\s*(?:'([^']*)'|"([^"]*)")/g)) {
      if (a[1] in attrs) throw new Error(`XML: attribute ${a[1]} twice at ${i}`);
      attrs[a[1]] = unescape(a[2] ?? a[3], i);
    }
    const el: XmlElement = { kind: 'element', name: m[1], attrs, children: [] };
    top().children.push(el);
    if (!m[3]) stack.push(el);
    i += m[0].length;
  }
  if (stack.length !== 1) throw new Error(`XML: <${top().name}> is not closed`);
  return stack[0].children;
}

export function elements(nodes: XmlNode[], name?: string): XmlElement[] {
  return nodes.filter((n): n is XmlElement => n.kind === 'element' && (name === undefined || n.name === name));
}

export function comments(nodes: XmlNode[]): string[] {
  return nodes.filter((n): n is XmlComment => n.kind === 'comment').map((n) => n.text);
}
