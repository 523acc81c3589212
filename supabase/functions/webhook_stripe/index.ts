// Stripe's webhook endpoint (verify_jwt = false: Stripe signs, it sends no JWT).
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("webhook_stripe", handler);
