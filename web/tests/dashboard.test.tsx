import { act, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { beforeEach, describe, expect, it } from 'vitest';
import { App } from '../src/dashboard/App';
import { takeTokenFromFragment } from '../src/dashboard/token';
import { alert, FakeWebSocket, notification, price, T, welcome } from './fakeSocket';
import { installFakeWebSocket } from './fakeGateway';

installFakeWebSocket();

beforeEach(() => {
  localStorage.clear();
});

describe('the dashboard', () => {
  it('shows the connection, follows picked symbols, and lists events', async () => {
    render(<App />);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(screen.getByRole('status').textContent).toContain('Connecting');
    expect(screen.getByRole('button', { name: 'Reconnect' })).toHaveProperty('disabled', true);
    const socket = FakeWebSocket.last;
    act(() => {
      socket.serverOpen();
      socket.serverSend(welcome('e1', ['AAPL', 'MSFT', 'GOOGL']));
    });
    expect(screen.getByRole('status').textContent).toContain('Live');
    // Every symbol of a small universe is followed by default.
    expect(screen.getByRole('checkbox', { name: 'AAPL' })).toHaveProperty('checked', true);
    act(() => {
      socket.serverSend(price('AAPL', 190.5));
      socket.serverSend(price('MSFT', 420, 1, -2));
      socket.serverSend(alert('a1'));
      socket.serverSend(notification('n1'));
    });
    const table = screen.getByRole('table');
    await waitFor(() => expect(within(table).getByText('190.50')).toBeTruthy());
    expect(table.querySelector('tr[data-symbol="AAPL"] td.change')?.className).toContain('up');
    expect(table.querySelector('tr[data-symbol="MSFT"] td.change')?.className).toContain('down');
    expect(screen.getByRole('log', { name: /Alerts/ }).textContent).toContain('alert a1');
    fireEvent.click(screen.getByRole('button', { name: 'Dismiss: note n1' }));
    expect(screen.getByRole('log', { name: /Notifications/ }).textContent).not.toContain('note n1');

    fireEvent.click(screen.getByRole('checkbox', { name: 'MSFT' }));
    expect(table.querySelector('tr[data-symbol="MSFT"]')).toBeNull();
    expect(JSON.parse(localStorage.getItem('realtime.dashboard.symbols') ?? '[]')).toEqual(['AAPL', 'GOOGL']);

    act(() => socket.serverClose(4409, 'replaced'));
    expect(screen.getByRole('status').textContent).toContain('4409');
    fireEvent.click(screen.getByRole('button', { name: 'Reconnect' }));
    expect(FakeWebSocket.instances).toHaveLength(2);
  });
});

describe('the dashboard with authentication on', () => {
  const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln';

  it('takes the token from #token= and clears it from the address bar, keeping the rest', () => {
    window.history.replaceState(null, '', `/dash?x=1#token=${jwt}&view=compact`);
    expect(takeTokenFromFragment(window.location, window.history)).toBe(jwt);
    expect(window.location.pathname + window.location.search + window.location.hash).toBe('/dash?x=1#view=compact');
    window.history.replaceState(null, '', `/#token=${jwt}`);
    expect(takeTokenFromFragment(window.location, window.history)).toBe(jwt);
    expect(window.location.href).not.toContain('#');
    expect(takeTokenFromFragment(window.location, window.history)).toBeNull(); // nothing to take
  });

  it('sends the token it was given first', () => {
    render(<App initialToken={jwt} />);
    const socket = FakeWebSocket.last;
    act(() => socket.serverOpen());
    expect(socket.sent[0]).toEqual({ type: 'auth', token: jwt });
  });

  it('after a 4401 asks for a token, with the gateway’s reason, and connects with the pasted one', () => {
    render(<App />);
    const socket = FakeWebSocket.last;
    act(() => {
      socket.serverOpen();
      socket.serverSend({
        type: 'error',
        code: 'unauthorized',
        error: 'Unauthorized: authenticate first: the first message must be {"type":"auth","token":"<jwt>"}',
        timestamp: T,
      });
      socket.serverClose(4401, 'Unauthorized');
    });
    expect(screen.getByRole('heading', { name: 'This gateway needs a token' })).toBeTruthy();
    expect(screen.getByText(/authenticate first/)).toBeTruthy();
    const connect = screen.getByRole('button', { name: 'Connect' });
    expect(connect).toHaveProperty('disabled', true);
    fireEvent.change(screen.getByLabelText('Token'), { target: { value: ` ${jwt} ` } });
    fireEvent.click(connect);
    expect(FakeWebSocket.instances).toHaveLength(2);
    const next = FakeWebSocket.last;
    act(() => {
      next.serverOpen();
      next.serverSend(welcome());
    });
    expect(next.sent[0]).toEqual({ type: 'auth', token: jwt });
    expect(screen.queryByRole('heading', { name: 'This gateway needs a token' })).toBeNull();
    expect(screen.getByRole('status').textContent).toContain('Live');
  });
});
