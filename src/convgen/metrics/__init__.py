"""Image quality metrics: restoration (PSNR, SSIM, MS-SSIM) and generation (Fréchet distance, KID, IS, P/R)."""
