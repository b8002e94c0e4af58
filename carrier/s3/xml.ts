/**
 * S3's XML both ways. Answers are built here as text (a tree of plain values, escaped), request
 * bodies (DeleteObjects, CompleteMultipartUpload) parsed with fast-xml-parser after a size check:
 * a body over MAX_XML_BYTES is refused before it is read in full, and anything that is not the
 * expected document is MalformedXML.
 */
import { XMLParser } from 'fast-xml-parser';
import { S3Error } from './errors.js';

export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
/** The largest XML request body taken (DeleteObjects of 1000 keys of 1 KiB fits). */
export const MAX_XML_BYTES = 2 * 1024 * 1024;

/** An element's content: text, children (an array repeats the element), or nothing. */
export type XmlValue = string | number | boolean | null | undefined | XmlTree | XmlTree[];
export interface XmlTree {
  [name: string]: XmlValue;
}

export const escapeXml = (text: string) => text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);

function element(name: string, value: XmlValue): string {
  if (value === undefined) return '';
  if (Array.isArray(value)) return value.map((v) => element(name, v)).join('');
  if (value === null) return `<${name}/>`;
  if (typeof value === 'object') return `<${name}>${Object.entries(value).map(([k, v]) => element(k, v)).join('')}</${name}>`;
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

/** A whole document: the root element in S3's namespace. */
export function xmlDocument(root: string, body: XmlTree): string {
  const inner = Object.entries(body).map(([k, v]) => element(k, v)).join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="${S3_NS}">${inner}</${root}>`;
}

/** Reads an XML body of at most MAX_XML_BYTES (MalformedXML past it: nothing more is read). */
export async function readXml(body: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of body) {
    n += p.length;
    if (n > MAX_XML_BYTES) throw new S3Error('MalformedXML', 400, `the XML body is over ${MAX_XML_BYTES} bytes`);
    parts.push(p);
  }
  return Buffer.concat(parts).toString('utf8');
}

/**
 * Character references (`&#34;`, `&#x22;`) are decoded as XML requires: fast-xml-parser decodes
 * them only with `htmlEntities` on (which also takes HTML's named entities such as `&nbsp;`, that
 * no conforming client sends: its `&` would be `&amp;`). Go's encoding/xml (rclone, mc, the Go
 * SDKs) writes every `"` in text as `&#34;`, so without this their CompleteMultipartUpload ETags
 * never match (InvalidPart). `&amp;` is decoded last, so `&amp;#34;` stays the text `&#34;`.
 */
const PARSER_OPTIONS = { ignoreAttributes: true, parseTagValue: false, trimValues: false, processEntities: true, htmlEntities: true, ignoreDeclaration: true, removeNSPrefix: true };

/** Parses `text`, whose root must be `root`; the tree under it (elements named in `lists` always arrays). */
export function parseXml(text: string, root: string, lists: readonly string[]): Record<string, unknown> {
  let doc: Record<string, unknown>;
  try {
    doc = new XMLParser({ ...PARSER_OPTIONS, isArray: (name: string) => lists.includes(name) }).parse(text, true) as Record<string, unknown>;
  } catch (err) {
    throw new S3Error('MalformedXML', 400, 'the XML body is not well-formed', { cause: err });
  }
  const tree = doc[root];
  if (tree === undefined || tree === null || typeof tree !== 'object') throw new S3Error('MalformedXML', 400, `the XML body is not a ${root} document`);
  return tree as Record<string, unknown>;
}

/** A text child, or undefined when absent; MalformedXML when it is not text. */
export function textOf(tree: Record<string, unknown>, name: string): string | undefined {
  const v = tree[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new S3Error('MalformedXML', 400, `${name} must be text`);
  return v;
}
