// Liveness of the serving path end to end: edge runtime -> function -> database.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("health", handler);
