// PIX webhooks from MercadoPago and OpenPIX (verify_jwt = false: they sign, they send no JWT).
import { handler } from "./handler.ts";

Deno.serve(handler);
