// Starts a guest's payment: nights held, attempt recorded, provider payment created.
import { handler } from "./handler.ts";

Deno.serve(handler);
