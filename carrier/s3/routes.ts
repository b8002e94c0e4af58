/**
 * Which S3 operation a request is (path-style addressing: /, /bucket, /bucket/name), and its
 * handler. A request for a sub-resource or operation the gateway does not implement (?acl,
 * ?versioning, ?tagging, POST ?select...) is NotImplemented (501), in S3's XML error form.
 */
import { createBucket, deleteBucket, getBucketLocation, headBucket, listBuckets } from './buckets.js';
import type { Ctx } from './context.js';
import { listObjects, listObjectsV2 } from './listing.js';
import { abortMultipartUpload, completeMultipartUpload, createMultipartUpload, listMultipartUploads, listParts, uploadPart, uploadPartCopy } from './multipart.js';
import { copyObject, deleteObject, deleteObjects, getObject, headObject, putObject } from './objects.js';

export const OPERATIONS = {
  ListBuckets: listBuckets,
  CreateBucket: createBucket,
  DeleteBucket: deleteBucket,
  HeadBucket: headBucket,
  GetBucketLocation: getBucketLocation,
  PutObject: putObject,
  GetObject: getObject,
  HeadObject: headObject,
  DeleteObject: deleteObject,
  DeleteObjects: deleteObjects,
  CopyObject: copyObject,
  ListObjects: listObjects,
  ListObjectsV2: listObjectsV2,
  CreateMultipartUpload: createMultipartUpload,
  UploadPart: uploadPart,
  UploadPartCopy: uploadPartCopy,
  CompleteMultipartUpload: completeMultipartUpload,
  AbortMultipartUpload: abortMultipartUpload,
  ListParts: listParts,
  ListMultipartUploads: listMultipartUploads,
} satisfies Record<string, (ctx: Ctx) => Promise<void>>;

export type Operation = keyof typeof OPERATIONS | 'NotImplemented';
export const OPERATION_NAMES = [...Object.keys(OPERATIONS), 'NotImplemented'] as Operation[];

/**
 * Query names that select a sub-resource (S3's list): a request carrying one the routes below do
 * not take is another operation, not this one with an ignored parameter.
 */
const SUBRESOURCES = new Set(['acl', 'accelerate', 'analytics', 'attributes', 'cors', 'encryption', 'intelligent-tiering', 'inventory', 'legal-hold', 'lifecycle', 'location', 'logging', 'metrics', 'notification', 'object-lock', 'ownershipControls', 'policy', 'policyStatus', 'publicAccessBlock', 'replication', 'requestPayment', 'restore', 'retention', 'select', 'tagging', 'torrent', 'uploadId', 'uploads', 'versioning', 'versions', 'website', 'delete', 'partNumber']);

/** The operation of a request, from its method, what its path names and its query. */
export function operationOf(method: string, bucket: string | undefined, name: string | undefined, query: Map<string, string>, headers: Record<string, string | string[] | undefined>): Operation {
  const subs = [...query.keys()].filter((k) => SUBRESOURCES.has(k)).sort().join('&');
  const copy = headers['x-amz-copy-source'] !== undefined;
  if (bucket === undefined) return method === 'GET' && subs === '' ? 'ListBuckets' : 'NotImplemented';
  if (name === undefined) {
    switch (`${method} ${subs}`) {
      case 'PUT ':
        return 'CreateBucket';
      case 'DELETE ':
        return 'DeleteBucket';
      case 'HEAD ':
        return 'HeadBucket';
      case 'GET location':
        return 'GetBucketLocation';
      case 'GET uploads':
        return 'ListMultipartUploads';
      case 'GET ':
        return query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
      case 'POST delete':
        return 'DeleteObjects';
      default:
        return 'NotImplemented';
    }
  }
  switch (`${method} ${subs}`) {
    case 'PUT ':
      return copy ? 'CopyObject' : 'PutObject';
    case 'PUT partNumber&uploadId':
      return copy ? 'UploadPartCopy' : 'UploadPart';
    case 'GET ':
      return 'GetObject';
    case 'HEAD ':
      return 'HeadObject';
    case 'DELETE ':
      return 'DeleteObject';
    case 'GET uploadId':
      return 'ListParts';
    case 'DELETE uploadId':
      return 'AbortMultipartUpload';
    case 'POST uploads':
      return 'CreateMultipartUpload';
    case 'POST uploadId':
      return 'CompleteMultipartUpload';
    default:
      return 'NotImplemented';
  }
}
