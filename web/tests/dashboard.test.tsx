import { act, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { beforeEach, describe, expect, it } from 'vitest';
import { App } from '../src/dashboard/App';
import { alert, FakeWebSocket, notification, price, welcome } from './fakeSocket';
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
