/**
 * The S3 gateway's errors. An S3 client does not read OuroDB's codes: it reads S3's own error
 * codes (`SignatureDoesNotMatch`, `BadDigest`, ...) from an XML body, and its retry logic keys on
 * the HTTP status. So an `S3Error` carries both: `s3Code` and `status` as S3 documents them
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html), under the one OuroDB code
 * `OURO_S3` for code that handles OuroErrors generically.
 */
import { XMLBuilder } from 'fast-xml-parser';
import { OuroError } from '../../lib/errors.js';

export class S3Error extends OuroError {
  /** The resource the request named (`/bucket/key`), echoed in the XML body when known. */
  readonly resource: string | undefined;
  constructor(readonly s3Code: string, readonly status: number, message: string, options?: { cause?: unknown; resource?: string }) {
    super('OURO_S3', message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.resource = options?.resource;
  }
}

// Text is escaped by the builder (processEntities), so a key such as `a&<b>` cannot break the body.
const builder = new XMLBuilder({ processEntities: true, suppressEmptyNode: false });

/**
 * S3's XML error body for `err`:
 * `<Error><Code>..</Code><Message>..</Message><Resource>..</Resource><RequestId>..</RequestId></Error>`.
 * `Resource` is left out when the error names none.
 */
export function errorXml(err: S3Error, requestId: string): string {
  const body: Record<string, string> = { Code: err.s3Code, Message: err.message };
  if (err.resource !== undefined) body.Resource = err.resource;
  body.RequestId = requestId;
  return `<?xml version="1.0" encoding="UTF-8"?>\n${builder.build({ Error: body }) as string}`;
}

/** Shorthands for the errors authentication raises, so each code is spelled once with its status. */
export const s3 = {
  accessDenied: (message: string) => new S3Error('AccessDenied', 403, message),
  invalidAccessKeyId: (message: string) => new S3Error('InvalidAccessKeyId', 403, message),
  signatureDoesNotMatch: (message: string) => new S3Error('SignatureDoesNotMatch', 403, message),
  requestTimeTooSkewed: (message: string) => new S3Error('RequestTimeTooSkewed', 403, message),
  authorizationHeaderMalformed: (message: string) => new S3Error('AuthorizationHeaderMalformed', 400, message),
  authorizationQueryParametersError: (message: string) => new S3Error('AuthorizationQueryParametersError', 400, message),
  invalidArgument: (message: string) => new S3Error('InvalidArgument', 400, message),
  invalidRequest: (message: string) => new S3Error('InvalidRequest', 400, message),
  invalidDigest: (message: string) => new S3Error('InvalidDigest', 400, message),
  badDigest: (message: string) => new S3Error('BadDigest', 400, message),
  sha256Mismatch: (message: string) => new S3Error('XAmzContentSHA256Mismatch', 400, message),
  incompleteBody: (message: string) => new S3Error('IncompleteBody', 400, message),
  malformedTrailer: (message: string) => new S3Error('MalformedTrailerError', 400, message),
  notImplemented: (message: string) => new S3Error('NotImplemented', 501, message),
};
