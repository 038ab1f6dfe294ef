/** The fake socket as React tests drive it: installed for each test, opened and fed. */
import { act, cleanup } from '@testing-library/react';
import { afterEach, beforeEach, vi } from 'vitest';
import { resetSharedClients } from '../src/lib/websocket';
import { FakeWebSocket, welcome } from './fakeSocket';

/** Stand the fake in for `WebSocket` around every test of the calling file. */
export function installFakeWebSocket(): void {
  beforeEach(() => {
    FakeWebSocket.reset();
    vi.stubGlobal('WebSocket', FakeWebSocket);
  });

  afterEach(() => {
    cleanup(); // unmount what the test rendered (Vitest runs without globals: no auto-cleanup)
    resetSharedClients();
    vi.unstubAllGlobals();
  });
}

/** Open the newest socket and say hello, as the gateway does. */
export function serverAccepts(): FakeWebSocket {
  const socket = FakeWebSocket.last;
  act(() => {
    socket.serverOpen();
    socket.serverSend(welcome());
  });
  return socket;
}

/** Deliver `messages` on the newest socket, inside `act`. */
export function serverSends(...messages: Parameters<FakeWebSocket['serverSend']>[0][]): void {
  act(() => {
    for (const message of messages) FakeWebSocket.last.serverSend(message);
  });
}
