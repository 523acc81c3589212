// PIX webhooks from MercadoPago and OpenPIX (verify_jwt = false: they sign, they send no JWT).
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("webhook_pix", handler);
