/**
 * TEMPORARY STUB of s3-auth's carrier/s3/errors.ts (the contract in the split), so that
 * the gateway builds before that branch lands; replaced by the real file at merge.
 */
import { OuroError, type OuroErrorCode } from '../../lib/errors.js';

export class S3Error extends OuroError {
  readonly resource: string | undefined;
  constructor(
    readonly s3Code: string,
    readonly status: number,
    message: string,
    options?: { cause?: unknown; resource?: string },
  ) {
    super('OURO_S3' as OuroErrorCode, message, options);
    this.resource = options?.resource;
  }
}
