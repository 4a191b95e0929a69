// One operation at a time on a device's Signal state (sessions, keys): receiving, sending and the
// prekey upkeep each read it, change it and save it, and must not interleave.

/** An async mutex: run(fn) starts fn once every earlier fn has settled. */
export class Lock {
  #tail = Promise.resolve();

  run(fn) {
    const p = this.#tail.then(fn, fn);
    this.#tail = p.catch(() => {});
    return p;
  }
}
