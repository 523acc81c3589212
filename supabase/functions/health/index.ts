// Liveness of the serving path end to end: edge runtime -> function -> database.
import { handler } from "./handler.ts";

Deno.serve(handler);
