// patchwire's errors, in one module: each class carries a stable patchwire
// code. Only the edges translate them: src/control/service.ts to gRPC status
// codes, src/capture/http.ts to HTTP status codes. Everything in between
// throws and tests these classes, never bare numbers.

export type ErrorCode =
  | 'CANCELLED'
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'INTERNAL';

export class PatchwireError extends Error {
  readonly code: ErrorCode = 'INTERNAL';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The caller went away or stopped the call itself. */
export class Cancelled extends PatchwireError {
  override readonly code = 'CANCELLED';
}
/** The request itself is wrong: retrying it unchanged will fail again. */
export class InvalidArgument extends PatchwireError {
  override readonly code = 'INVALID_ARGUMENT';
}
export class NotFound extends PatchwireError {
  override readonly code = 'NOT_FOUND';
}
export class AlreadyExists extends PatchwireError {
  override readonly code = 'ALREADY_EXISTS';
}
/** The request is fine but the system is not in a state to do it (an interface is missing, cluster mode owns the wires). */
export class FailedPrecondition extends PatchwireError {
  override readonly code = 'FAILED_PRECONDITION';
}
/** No credential, or one that proves nothing. */
export class Unauthenticated extends PatchwireError {
  override readonly code = 'UNAUTHENTICATED';
}
/** A known caller asked for something it may not have. */
export class PermissionDenied extends PatchwireError {
  override readonly code = 'PERMISSION_DENIED';
}
/** A bound was reached (sessions, memory, sizes). */
export class ResourceExhausted extends PatchwireError {
  override readonly code = 'RESOURCE_EXHAUSTED';
}
/** Something we depend on cannot be reached now; retrying may work. */
export class Unavailable extends PatchwireError {
  override readonly code = 'UNAVAILABLE';
}
/** A bug: something that should not happen did. */
export class Internal extends PatchwireError {
  override readonly code = 'INTERNAL';
}

const BY_CODE: Record<ErrorCode, new (message: string, options?: { cause?: unknown }) => PatchwireError> = {
  CANCELLED: Cancelled,
  INVALID_ARGUMENT: InvalidArgument,
  NOT_FOUND: NotFound,
  ALREADY_EXISTS: AlreadyExists,
  FAILED_PRECONDITION: FailedPrecondition,
  UNAUTHENTICATED: Unauthenticated,
  PERMISSION_DENIED: PermissionDenied,
  RESOURCE_EXHAUSTED: ResourceExhausted,
  UNAVAILABLE: Unavailable,
  INTERNAL: Internal,
};

/** The error class of a code (for the edges that decode a code from the wire). */
export function errorFor(code: ErrorCode, message: string, cause?: unknown): PatchwireError {
  return new BY_CODE[code](message, cause === undefined ? undefined : { cause });
}

/** An error with a patchwire code; anything else is a bug and becomes Internal. */
export function asPatchwireError(err: unknown): PatchwireError {
  if (err instanceof PatchwireError) return err;
  return new Internal(err instanceof Error ? err.message : String(err), { cause: err });
}
