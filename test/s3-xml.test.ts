/**
 * S3 request bodies as clients write them (carrier/s3/xml.ts). Go's encoding/xml, which rclone,
 * mc and every Go SDK use, escapes `"` in text as `&#34;`: a CompleteMultipartUpload from rclone
 * carries `<ETag>&#34;md5&#34;</ETag>`, so character references must be decoded like the five
 * named entities, or every part's ETag mismatches (InvalidPart).
 */
import { describe, expect, it } from 'vitest';
import { parseXml, textOf } from '../carrier/s3/xml.js';

describe('S3 XML bodies', () => {
  it('decodes numeric character references (Go escapes quotes as &#34;) and the named entities, once', () => {
    const body = '<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>&#34;261d76acc57391c0eec748f7a267b7d0&#34;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&#x22;ab&quot;</ETag></Part></CompleteMultipartUpload>';
    const tree = parseXml(body, 'CompleteMultipartUpload', ['Part']);
    const parts = tree.Part as Array<Record<string, unknown>>;
    expect(parts.map((p) => textOf(p, 'ETag'))).toEqual(['"261d76acc57391c0eec748f7a267b7d0"', '"ab"']);
    // An escaped ampersand yields the literal text of a reference, not the character it names.
    const del = parseXml('<Delete><Object><Key>a&amp;#34;b &lt;&#233;&gt; &apos;</Key></Object></Delete>', 'Delete', ['Object']);
    expect(textOf((del.Object as Array<Record<string, unknown>>)[0]!, 'Key')).toBe("a&#34;b <é> '");
  });
});
