// Types for the generator script, so the staleness test can import it under strict TS.
export const webRoot: string;
export const outputPath: string;
export const closeCodesPath: string;
export const namesPath: string;
export function readSchema(bin?: string): object;
export function generate(schema: object): Promise<string>;
export function generateCloseCodes(schema: object): string;
export function generateNames(schema: object): string;
export function generateAll(schema: object): Promise<[path: string, content: string][]>;
export function staleFiles(schema?: object): Promise<string[]>;
export function isStale(schema?: object): Promise<boolean>;
