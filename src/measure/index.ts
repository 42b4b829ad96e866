/** Launch measurements of confidential VMs (AMD SEV, SEV-ES, SEV-SNP) and SNP attestation reports. */
export * from './cvm/index.ts';
