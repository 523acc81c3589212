// The operator a console request proves: a user token verified like every caller's (_shared/auth.ts:
// the project's JWKS or its legacy secret; exp, nbf, aud, iss) whose app_metadata.reserve_role is
// operator (app_metadata is writable by the service role only, so a user cannot grant it to themselves).
export { AuthRefusal as OperatorRefusal, type Operator, verifyOperator } from "../_shared/auth.ts";
import type { Operator } from "../_shared/auth.ts";

/**
 * The name shown and recorded for an operator's actions: the email when the token has one, else the
 * subject. A name is no identity (a user can change their email): 4-eyes compares the token's sub, which
 * the console passes beside it (api.ts run, reserve.correction_actor).
 */
export const operatorName = (o: Operator) => o.email ?? o.sub;
