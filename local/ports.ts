import net from "node:net";

export class PortInUseError extends Error {}

/** Fails with one readable line when something already listens on the port. */
export async function assertPortFree(port: number, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        err.code === "EADDRINUSE"
          ? new PortInUseError(`port ${port} (${what}) is already in use: stop what holds it or choose another port`)
          : err,
      ));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve()));
  });
}

// Below Linux's ephemeral range (32768-60999 by default): listen(0) hands out a port from that range,
// and so does every outgoing connection (a test's many database connections), which can take the port
// between our check and the server's bind (EADDRINUSE in a busy suite). A port below it is taken only by
// a listener; one process never hands the same port out twice.
const LOW = 10_000;
const HIGH = 32_767;
const handedOut = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** A port free right now, outside the range outgoing connections use (tests use it to avoid fixed ports). */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW + 1));
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found between ${LOW} and ${HIGH}`);
}
