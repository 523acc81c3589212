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

/** A port the OS reports free right now (tests use it to avoid fixed ports). */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
