// Stripe's webhook endpoint (verify_jwt = false: Stripe signs, it sends no JWT).
import { handler } from "./handler.ts";

Deno.serve(handler);
