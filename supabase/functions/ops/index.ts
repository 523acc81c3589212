// The ops console: its page and its API, for operators signed in with an operator token.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("ops", handler);
